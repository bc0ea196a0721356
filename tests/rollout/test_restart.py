"""A rollout is judged on its own traffic: after a challenger is rolled back and the incident
closed, a new rollout of the same version starts with an empty window instead of being rolled
back at once for what the first one saw. The automatic incident names the dataset version the
challenger trained on."""

from __future__ import annotations

import time

from test_rollout import _traffic

from lamina.governance import incidents
from lamina.registry.release import acting_as
from lamina.rollout import control, record
from lamina.rollout.serving import Guardian, Observer


def test_a_restarted_rollout_is_not_judged_on_the_earlier_rollouts_traffic(released, tmp_path):
    v1, v2, _ = released
    guards = ["live.pii_rate <= champion"]
    with acting_as("bob"):
        control.start("tickets", v2, "production", canary=50, guards=guards, window_s=600, min_requests=20)
    observer, guardian = Observer(), Guardian(every_s=0)
    _traffic(range(200), observer, guardian, bad_version=v2)
    assert record.state("tickets", "production")["state"] == "rolled_back"
    (incident,) = incidents.all_incidents("tickets")
    assert incident["datasets"] == ["ds-tickets-001"]  # what v2 trained on: where data lessons go
    for contact in ("dpo@example.com", "acme-customer"):
        incidents.notified(incident["id"], contact)
    retro = tmp_path / "retro.md"
    retro.write_text("# v2 leaked order numbers\nfixed the masking; trying again\n")
    incidents.close(incident["id"], retro)

    time.sleep(0.01)  # the new rollout starts strictly after the old events
    with acting_as("bob"):
        again = control.start("tickets", v2, "production", canary=50, guards=guards, window_s=600,
                               min_requests=20)
    result = control.check("tickets", "production")
    # The 600 s window still holds the first rollout's PII trips; this one has seen nothing yet.
    assert result["verdict"]["state"] == "wait" and result["verdict"]["requests"] == 0
    assert result["action"] is None and record.active("tickets", "production")["id"] == again["id"]
    _traffic(range(200, 400), observer, guardian, bad_version=None)  # now v2 answers cleanly
    result = control.check("tickets", "production")
    assert result["verdict"]["state"] == "pass" and result["verdict"]["requests"] >= 20
