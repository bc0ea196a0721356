"""Pure parts of a rollout: live guards parsed and judged on window statistics, the sticky
split, shadow agreement, and the statistics the live event files give."""

from __future__ import annotations

import time

import pytest

from lamina.errors import LaminaError
from lamina.rollout import guards, live, split


def _row(**kw) -> dict:
    base = {
        "requests": 50,
        "error_rate": 0.0,
        "latency_p95_s": 0.1,
        "guard_trip_rate": 0.0,
        "refusal_rate": 0.0,
    }
    return {**base, **kw}


def test_guards_use_the_gate_language_over_live_metrics_and_name_a_bad_one():
    parsed = guards.parse_guards(["live.error_rate <= champion + 0.02", "live.latency_p95_s <= champion * 2"])
    assert [g.key for g in parsed] == ["live.error_rate", "live.latency_p95_s"]
    with pytest.raises(LaminaError, match=r"rollout.guards\[1\].*no metric 'eror_rate'"):
        guards.parse_guards(["live.error_rate <= 0.1", "live.eror_rate <= 0.1"])
    with pytest.raises(LaminaError, match="unknown suite 'task'"):
        guards.parse_guards(["task.exact_match >= 0.5"])  # eval metrics are not live metrics


def test_verdict_waits_for_the_minimum_sample_then_breaches_on_numbers_it_saw():
    gs = guards.parse_guards(["live.error_rate <= champion + 0.02", "live.feedback_score >= 3"])
    champion = _row(error_rate=0.01)
    assert guards.judge(gs, _row(requests=19, error_rate=0.5), champion, 20).state == "wait"
    passing = guards.judge(gs, _row(error_rate=0.02), champion, 20)
    # feedback_score was never given: reported, not a breach
    assert passing.state == "pass" and passing.checks[1].value is None and not passing.breached
    broken = guards.judge(gs, _row(error_rate=0.05), champion, 20)
    assert broken.state == "breach"
    assert [(c.expr, c.value, c.threshold) for c in broken.breached] == [
        ("live.error_rate <= champion + 0.02", 0.05, pytest.approx(0.03))
    ]


def test_split_is_sticky_per_caller_and_near_the_set_share():
    rollout = {"id": "r1", "state": "active", "mode": "canary", "share": 10.0, "challenger": 4}
    callers = [f"key-{i}" for i in range(4000)]
    first = {c: split.version_for(rollout, 3, c) for c in callers}
    assert all(split.version_for(rollout, 3, c) == first[c] for c in callers)  # sticky
    share = sum(v == 4 for v in first.values()) / len(callers)
    assert abs(share - 0.10) < 0.02
    raised = {**rollout, "share": 50.0}
    # raising the share only moves callers onto the challenger, never back
    assert all(split.version_for(raised, 3, c) == 4 for c in callers if first[c] == 4)
    assert abs(sum(split.version_for(raised, 3, c) == 4 for c in callers) / len(callers) - 0.5) < 0.03
    ended = {**rollout, "state": "rolled_back"}
    assert {split.version_for(ended, 3, c) for c in callers} == {3}


def test_shadow_never_routes_users_to_the_challenger():
    rollout = {"id": "r2", "state": "active", "mode": "shadow", "share": 0.0, "challenger": 4}
    assert {split.version_for(rollout, 3, f"u{i}") for i in range(500)} == {3}
    assert split.shadow_of(rollout) == 4 and split.shadow_of({**rollout, "state": "aborted"}) is None
    assert split.agree("ORDER=4821;  ITEM=kettle", "order=4821; item=KETTLE")
    assert not split.agree("ORDER=4821", "ORDER=4822")


def test_window_statistics_from_live_files_of_two_replicas(workspace):
    a, b = live.LiveLog("replica-a"), live.LiveLog("replica-b")
    for i in range(20):
        a.request("tickets/1", ok=True, latency_s=0.01 * (i + 1), prompt_tokens=100)
    b.request("tickets/2", ok=False, latency_s=1.0)
    b.request("tickets/2", ok=True, latency_s=0.5, guard_trips={"pii": 2}, response_id="r-1")
    b.request("tickets/2", ok=True, latency_s=0.5, refused=False)
    b.feedback("tickets/2", "r-1", 2.0)
    b.shadow("tickets/1", "tickets/2", agree=True, ok=True, latency_s=0.4)
    b.shadow("tickets/1", "tickets/2", agree=False, ok=True, latency_s=0.4)
    rows = live.window("tickets", 60)
    one, two = rows["tickets/1"], rows["tickets/2"]
    assert one["requests"] == 20 and one["error_rate"] == 0
    assert one["latency_p95_s"] == pytest.approx(0.19) and one["latency_p50_s"] == pytest.approx(0.10)
    assert two["requests"] == 3 and two["error_rate"] == pytest.approx(1 / 3)
    assert (two["pii_trips"], two["pii_rate"], two["guard_trips"]) == (2, 0.5, 2)
    assert (two["feedback_n"], two["feedback_score"], two["agreement_rate"]) == (1, 2.0, 0.5)
    assert live.window("tickets", 60, at=time.time() + 120) == {}  # outside the window
    files = sorted(p.name.split("-", 1)[1] for p in (workspace / "live" / "tickets").iterdir())
    assert files == ["replica-a.jsonl", "replica-b.jsonl"]
