"""A drill against a server that does not answer the alias refuses before moving anything:
it used to roll the alias back, wait its full timeout and leave it there."""

from __future__ import annotations

import socket

import pytest

from lamina.errors import LaminaError
from lamina.registry import aliases
from lamina.registry.release import acting_as
from lamina.rollout import drill


def test_drill_refuses_a_server_that_does_not_serve_the_alias_and_moves_nothing(released):
    v1, v2, _ = released
    with acting_as("bob"):
        aliases.promote("tickets", v1, "staging", reason="drill setup")
        aliases.promote("tickets", v2, "staging", reason="drill setup")
    before = aliases.history("tickets")
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with pytest.raises(LaminaError, match=r"does not answer tickets@staging from tickets/2 now \(no answer"):
        drill.drill("tickets", "staging", server=url, timeout_s=5)
    assert aliases.current("tickets", "staging") == v2 and aliases.history("tickets") == before
