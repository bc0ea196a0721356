"""Fixtures for intake tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from intake_fixtures import info, tickets, write_jsonl

from lamina.data.intake.sources import add_source


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_jsonl(tmp_path / "tickets.jsonl", tickets(120))


@pytest.fixture
def source(corpus):
    return add_source(corpus, info())
