"""Rollouts on a real server (loopback, openai client): a canary whose answers are rated worse
is rolled back by the server's own guard watch with no failed request, callers stay on one
version while it runs, and POST /v1/feedback stores ratings with the answering version."""

from __future__ import annotations

import time

import httpx
from serve_runs import client_for, issue_key, running

MESSAGES = [{"role": "user", "content": "where is my order"}]


def _wait(predicate, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_worse_canary_is_rolled_back_by_the_server_with_no_failed_request(registry):
    from lamina.governance import incidents
    from lamina.registry import aliases
    from lamina.registry.release import acting_as
    from lamina.rollout import control, record

    v1, v2, _ = registry
    key = issue_key(user="loadgen")
    with running(["tickets@production"]) as server:
        with acting_as("bob"):
            control.start("tickets", v2, "production", canary=30, min_requests=6, window_s=300,
                          guards=["live.error_rate <= champion + 0.02", "live.feedback_score >= champion - 1"])
        _wait(lambda: server.router.get("tickets@production").plan is not None)  # the watch loaded v2
        client = client_for(server, key)
        feedback = httpx.Client(base_url=f"http://127.0.0.1:{server.port}/v1",
                                headers={"Authorization": f"Bearer {key}"}, timeout=30)
        answered, during = [], {}
        for i in range(120):
            caller = f"caller-{i % 40}"
            raw = client.chat.completions.with_raw_response.create(
                model="tickets@production", messages=MESSAGES, max_tokens=2, temperature=0, user=caller)
            version = raw.headers["x-lamina-version"]
            rating = 1 if version == f"tickets/{v2}" else 5  # the operator rates v2's answers worse
            r = feedback.post("/feedback", json={"id": raw.parse().id, "rating": rating})
            assert r.status_code == 200 and r.json()["version"] == version
            active = record.active("tickets", "production") is not None
            answered.append((version, active))
            if active:
                during.setdefault(caller, set()).add(version)
            if not active:
                break
        # The next poll routes the whole alias to the champion again.
        _wait(lambda: server.router.get("tickets@production").plan is None)
        after = {
            client.chat.completions.with_raw_response.create(
                model="tickets@production", messages=MESSAGES, max_tokens=2, temperature=0, user=f"caller-{i}"
            ).headers["x-lamina-version"]
            for i in range(20)
        }
        assert feedback.post("/feedback", json={"id": "nope", "rating": 3}).status_code == 404
        feedback.close()
        metrics = _metrics(server, key)
    state = record.state("tickets", "production")
    assert state["state"] == "rolled_back" and aliases.current("tickets", "production") == v1
    assert all(len(seen) == 1 for seen in during.values())  # sticky while the canary ran
    assert {v for v, _ in answered} == {f"tickets/{v1}", f"tickets/{v2}"}
    assert after == {f"tickets/{v1}"}  # after the rollback the champion answers everyone
    (incident,) = incidents.all_incidents("tickets")
    assert incident["source"] == "guard_breach" and incident["versions"] == [v2]
    # What an operator scrapes: the ratings per version, the guard's action, the split back at 0.
    rated_v2 = sum(1 for v, _ in answered if v == f"tickets/{v2}")
    assert metrics[f'lamina_feedback_rating_count{{version="tickets/{v2}"}}'] == rated_v2
    assert metrics[f'lamina_feedback_rating_count{{version="tickets/{v1}"}}'] == len(answered) - rated_v2
    assert metrics[f'lamina_feedback_rating_bucket{{le="1.0",version="tickets/{v2}"}}'] == rated_v2  # all 1s
    assert metrics['lamina_rollout_actions_total{action="rolled_back",ref="tickets@production"}'] == 1
    assert metrics[f'lamina_rollout_share_percent{{challenger="tickets/{v2}",mode="canary",ref="tickets@production"}}'] == 0


def test_shadow_rollout_never_changes_what_users_receive_and_records_agreement(registry):
    from lamina.registry.release import acting_as
    from lamina.rollout import control, live

    v1, v2, _ = registry
    key = issue_key(user="loadgen")

    def ask(client, i: int) -> tuple[str, str]:
        raw = client.chat.completions.with_raw_response.create(
            model="tickets@production", messages=MESSAGES, max_tokens=4, temperature=0, user=f"caller-{i}")
        return raw.headers["x-lamina-version"], raw.parse().choices[0].message.content

    with running(["tickets@production"]) as server:
        client = client_for(server, key)
        before = [ask(client, i) for i in range(12)]
        with acting_as("bob"):
            control.start("tickets", v2, "production", shadow=True, min_requests=5)
        _wait(lambda: server.router.get("tickets@production").plan is not None)
        during = [ask(client, i) for i in range(12)]
        # A streamed answer is copied too, once the user has all of it.
        stream = client.chat.completions.create(model="tickets@production", messages=MESSAGES, max_tokens=4,
                                                temperature=0, user="caller-0", stream=True)
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        _wait(lambda: (live.window("tickets", 300).get(f"tickets/{v2}") or {}).get("shadow_n", 0) >= 13)
        metrics = _metrics(server, key)
    assert metrics[f'lamina_shadow_copies_total{{challenger="tickets/{v2}",outcome="ok"}}'] >= 13
    assert metrics[f'lamina_rollout_share_percent{{challenger="tickets/{v2}",mode="shadow",ref="tickets@production"}}'] == 100
    assert during == before  # same version, same text, for every caller
    assert streamed == before[0][1]
    assert {v for v, _ in during} == {f"tickets/{v1}"}
    shadow = live.window("tickets", 300)[f"tickets/{v2}"]
    assert shadow["requests"] >= 12 and shadow["agreement_rate"] is not None


def test_drill_times_the_way_back_to_the_server_answering_from_the_old_version(registry):
    from lamina.registry import aliases
    from lamina.registry.release import acting_as
    from lamina.rollout import drill

    v1, v2, _ = registry
    key = issue_key(user="loadgen")
    with acting_as("dana"):
        aliases.promote("tickets", v1, "staging")
        aliases.promote("tickets", v2, "staging")
    with running(["tickets@staging"]) as server, acting_as("dana"):
        result = drill.drill("tickets", "staging", f"http://127.0.0.1:{server.port}/v1", key, timeout_s=20)
    assert (result["from"], result["rolled_back_to"], result["restored"]) == (v2, v1, True)
    # Measured from the alias move to the server answering from v1, then back to v2: within a few polls.
    assert 0 < result["back_served_s"] < 10 and 0 < result["forward_served_s"] < 10, result


def _metrics(server, key: str) -> dict[str, float]:
    """The server's /metrics as {series with sorted labels: value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{server.port}/metrics", headers={"Authorization": f"Bearer {key}"},
                     timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out
