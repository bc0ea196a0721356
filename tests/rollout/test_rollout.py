"""Rollouts against a real MLflow store: the record and its history, promotion rules asked
before traffic moves, automatic rollback of a worse challenger within one guard window (with
incident, disclosure and webhook), a good challenger completing, shadow mode, crash settling."""

from __future__ import annotations

import json

import pytest

from lamina.errors import LaminaError
from lamina.governance import audit, incidents
from lamina.registry import aliases, anchor, tracking
from lamina.registry.release import acting_as
from lamina.rollout import control, record, report
from lamina.rollout.serving import Guardian, Observer, RoutePlan

POLL = 10
GUARDS = [
    "live.error_rate <= champion + 0.02",
    "live.latency_p95_s <= champion * 2 + 0.25",
    "live.pii_rate <= champion",
]


def _traffic(callers: range, observer: Observer, guardian: Guardian | None, bad_version: int | None) -> dict:
    """Each caller sends one request to tickets@production, routed as a server routes it (the
    plan re-read and the guards judged every POLL requests, as a server does on its poll); the
    bad version's answers trip the PII guard (masked: the request still succeeds)."""
    served: dict[int, int] = {}
    for i in callers:
        if i % POLL == 0:
            plan = RoutePlan.read("tickets", "production")
        number = plan.pick(f"key-{i}")
        served[number] = served.get(number, 0) + 1
        trips = [("pii", "mask")] if number == bad_version else []
        observer.finished(
            f"tickets/{number}",
            status=200,
            latency_s=0.02,
            trips=trips,
            outputs=["ORDER=1; ITEM=kettle"],
            prompt_tokens=80,
            response_id=f"r-{i}",
            arm=plan.arm(number),
        )
        if guardian is not None and i % POLL == POLL - 1:
            guardian.poll("tickets", "production")
    return served


def test_canary_steps_and_completes_under_the_promotion_rules(released, lamina):
    v1, v2, _ = released
    with pytest.raises(LaminaError, match="lacks permission 'promote.production'"):
        control.start("tickets", v2, "production", canary=10)  # dana deploys, does not approve production
    with acting_as("alice"), pytest.raises(LaminaError, match="lacks permission"):
        control.start("tickets", v2, "production", canary=10)
    with acting_as("bob"):
        state = control.start("tickets", v2, "production", canary=10, reason="try v2 on a tenth")
        with pytest.raises(LaminaError, match="a rollout of version 2 is active"):
            control.start("tickets", 3, "production", canary=5)
        control.step("tickets", "production", 50, reason="no complaints")
        assert aliases.current("tickets", "production") == v1  # the alias moves only on completion
        done = control.complete("tickets", "production", reason="v2 holds")
    assert (state["champion"], state["challenger"], state["share"], state["guards"][0]) == (
        v1,
        v2,
        10.0,
        "live.error_rate <= champion + 0.02",
    )
    assert done["state"] == "completed" and aliases.current("tickets", "production") == v2
    ops = [
        (e["op"], e.get("user"), e.get("reason")) for e in report.history("tickets") if e["op"] != "register"
    ]
    assert ops == [
        ("promote", "bob", "first release"),
        ("rollout.start", "bob", "try v2 on a tenth"),
        ("rollout.step", "bob", "no complaints"),
        ("promote", "bob", "v2 holds"),
        ("rollout.complete", "bob", "v2 holds"),
    ]
    code, text, _ = lamina("history", "tickets")
    assert (
        code == 0 and "rollout.step      production: v2 canary 50% beside v1 by bob (no complaints)" in text
    )
    code, text, _ = lamina("rollout", "status", "tickets")
    assert (
        code == 0 and text.startswith("production: rollout ") and " completed — v2 (100%) beside v1;" in text
    )
    assert audit.verify().ok and anchor.check() == []


def test_worse_challenger_is_rolled_back_within_one_window_and_an_incident_opened(released, webhook):
    v1, v2, v3 = released
    url, received = webhook
    with acting_as("bob"):
        control.start(
            "tickets", v2, "production", canary=10, guards=GUARDS, window_s=60, min_requests=20, webhook=url
        )
    observer, guardian = Observer(), Guardian(every_s=0)
    served = _traffic(range(400), observer, guardian, bad_version=v2)
    # Rolled back at the first poll after v2 had its minimum sample: within one poll of 20 requests.
    assert 20 <= served[v2] < 20 + POLL and served[v1] + served[v2] == 400
    state = record.state("tickets", "production")
    assert state["state"] == "rolled_back" and state["share"] == 0.0
    assert aliases.current("tickets", "production") == v1
    after = _traffic(range(400, 600), observer, None, bad_version=v2)
    assert after == {v1: 200}  # every caller back on the champion

    (action,) = guardian.actions
    assert action["reason"] == "guard live.pii_rate <= champion broken: 1 vs 0"
    (incident,) = incidents.all_incidents("tickets")
    assert (incident["id"], incident["source"], incident["versions"], incident["owner"]) == (
        action["incident"],
        "guard_breach",
        [v2],
        "olivia",
    )
    assert incident["escalation"] == ["cto@example.com"]
    assert incident["signals"] == {"guard_breach": 1.0, "pii_in_outputs": float(served[v2])}
    (disclosure,) = incident["disclosures"]  # the PII trigger fired; the withdrawal one did not
    assert disclosure["notify"] == ["dpo@example.com", "acme-customer"]
    assert (received[0]["event"], received[0]["incident"], received[0]["breached"][0]["value"]) == (
        "rollout.rolled_back",
        incident["id"],
        1.0,
    )
    assert action["webhook"]["status"] == 204
    # The card page of v2 names the incident.
    mv = tracking.client().get_model_version("tickets", str(v2))
    assert (
        mv.tags["lamina.incidents"] == str(incident["id"]) and f"Incident {incident['id']}" in mv.description
    )
    # Promotions of the model are frozen while it is open.
    with acting_as("bob"), pytest.raises(LaminaError, match="frozen while incident 1 is open"):
        aliases.promote("tickets", v3, "production")
    with acting_as("bob"), pytest.raises(LaminaError, match="frozen while incident 1 is open"):
        control.start("tickets", v3, "production", canary=5)  # a new rollout is a promotion too
    entry = [e for e in audit.entries() if e["action"] == "rollout.rollback"][0]
    assert entry["user"] == "dana" and entry["details"]["breached"][0]["guard"] == "live.pii_rate <= champion"
    assert audit.verify().ok and anchor.check() == []


def test_good_challenger_passes_its_guards_and_completes(released):
    v1, v2, _ = released
    with acting_as("bob"):
        control.start("tickets", v2, "production", canary=20, guards=GUARDS, min_requests=20)
    # The rollout owns the alias: a plain promotion under it is refused.
    with acting_as("bob"), pytest.raises(LaminaError, match=r"rollout .* is active on production"):
        aliases.promote("tickets", v2, "production")
    guardian = Guardian(every_s=0)
    served = _traffic(range(300), Observer(), guardian, bad_version=None)
    assert served[v2] >= 40 and not guardian.actions
    (status,) = control.status("tickets")
    assert status["verdict"]["state"] == "pass" and status["challenger"]["requests"] == served[v2]
    with acting_as("bob"):
        control.complete("tickets", "production")
    assert aliases.current("tickets", "production") == v2 and incidents.all_incidents() == []


def test_shadow_users_always_get_the_champion_and_agreement_is_recorded(released):
    v1, v2, _ = released
    with acting_as("bob"):
        control.start("tickets", v2, "production", shadow=True, min_requests=5)
    observer = Observer()
    for i in range(50):
        plan = RoutePlan.read("tickets", "production")
        assert plan.pick(f"key-{i}") == v1 and plan.shadow == v2 and plan.versions == {v1, v2}
        observer.finished(
            f"tickets/{v1}",
            status=200,
            latency_s=0.02,
            trips=[],
            outputs=["ORDER=1"],
            prompt_tokens=10,
            response_id=f"r-{i}",
        )
        observer.shadowed(
            f"tickets/{v1}",
            f"tickets/{v2}",
            "ORDER=1",
            "ORDER=1" if i % 5 else "ORDER=2",
            status=200,
            latency_s=0.03,
            trips=[],
        )
    (status,) = control.status("tickets")
    assert status["champion"]["requests"] == 50 and status["challenger"]["requests"] == 50
    assert status["challenger"]["agreement_rate"] == pytest.approx(0.8)  # 40 of 50 copies agreed
    assert "shadow copy" in report.render_status([status])


def test_a_pending_event_is_applied_only_if_the_state_names_it(released):
    v1, v2, _ = released
    with acting_as("bob"):
        state = control.start("tickets", v2, "production", canary=10)
    # A writer that died after its event tag but before the state: the event never happened.
    dead = {
        "n": state["event"] + 1,
        "op": "rollout.step",
        "alias": "production",
        "rollout": state["id"],
        "champion": v1,
        "challenger": v2,
        "mode": "canary",
        "share": 90.0,
        "user": "bob",
        "reason": "",
        "time": "2099-01-01T00:00:00.000+00:00",
        "details": {},
        "state": "pending",
    }
    tracking.client().set_registered_model_tag(
        "tickets", f"{record.EVENT_PREFIX}{dead['n']:06d}", json.dumps(dead)
    )
    assert [e["op"] for e in record.events("tickets")] == ["rollout.start"]
    assert record.active("tickets", "production")["share"] == 10.0
