"""Input drift against the eval set: the eval set's prompt token counts travel with the version
(`eval/prompt_reference.json`, signed with it); live prompts much longer than the eval set's
break `live.prompt_drift <= 0.2` — `monitor check` opens an incident, `monitor --json` shows the
distance — while prompts drawn like the eval set (other tickets of the same generator) do not."""

from __future__ import annotations

import json

import pytest
import yaml
from registry_runs import make_run

from lamina.data.formats import Example
from lamina.data.synthetic import task_splits
from lamina.eval import inputs
from lamina.governance import incidents
from lamina.models.tiny import build_tokenizer
from lamina.registry import aliases, signing, tracking, versions
from lamina.registry.release import acting_as
from lamina.rollout import drift, guards, live, monitor

GUARD = "live.prompt_drift <= 0.2"


@pytest.fixture(scope="module")
def tickets():
    """A real BPE tokenizer, the held-out tickets (the eval set) and 200 other tickets."""
    train, held = task_splits(n_train=200, n_eval=100, seed=3)
    tok = build_tokenizer([m["content"] for r in train for m in r["messages"]], 400)
    return tok, [Example(r["messages"]) for r in held], [Example(r["messages"]) for r in train]


def _longer(example: Example) -> Example:
    """The same ticket pasted with a long thread above it: what a new client integration sends."""
    system, user, answer = example.messages
    return Example([system, {**user, "content": " ".join([user["content"]] * 4)}, answer])


@pytest.fixture
def staged(released, tickets, tmp_path):
    """tickets/4 evaluated on the held-out tickets (its reference kept as `lamina eval` keeps it),
    held to the drift guard by its recipe, at staging."""
    tok, held, _ = tickets
    with acting_as("alice"):
        run = make_run(tmp_path / "runs", "run-drift", seed=7, logged=False)
        (run / "eval" / inputs.REFERENCE).write_text(json.dumps(inputs.reference(tok, held)))
        signing.sign_dir(run / "eval")
        recipe = yaml.safe_load((run / "recipe.yaml").read_text())
        recipe["rollout"] = {"monitor_guards": [GUARD], "min_requests": 100}
        (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        tracking.log_run(run)
        number = versions.register(run, "tickets")["version"]
    with acting_as("bob"):
        aliases.promote("tickets", number, "staging", reason="drift test")
    return number


def _serve(number: int, examples: list[Example], tok) -> None:
    log = live.LiveLog("replica-a")
    for ex in examples:
        n = inputs.prompt_tokens(tok, inputs.prompt_of(ex))  # what the server counts for this request
        log.request(f"tickets/{number}", ok=True, latency_s=0.02, prompt_tokens=n)


def test_reference_counts_each_eval_prompt_as_the_server_would(tickets):
    tok, held, _ = tickets
    ref = inputs.reference(tok, held)
    # The chat template rendered with the generation prompt and tokenized in one call: the
    # ids the server feeds the model for a chat request with these messages.
    direct = sorted(
        len(tok.apply_chat_template(r.messages[:2], add_generation_prompt=True, return_dict=True)["input_ids"])
        for r in held
    )
    assert ref["n"] == 100 and sum(c for _, c in ref["histogram"]) == 100
    assert [n for n, c in ref["histogram"] for _ in range(c)] == direct
    assert ref["p50"] == direct[49] and ref["p95"] == direct[94]


def test_prompts_like_the_eval_set_pass_and_longer_ones_open_an_incident(staged, tickets, lamina):
    tok, _, others = tickets
    assert drift.reference(f"tickets/{staged}")["n"] == 100
    assert drift.reference("tickets/1") is None  # evaluated without a reference: nothing to judge

    _serve(staged, others, tok)  # 200 other tickets of the same generator
    row = live.window("tickets", 60)[f"tickets/{staged}"]
    assert row["requests"] == 200 and row["prompt_drift"] < 0.12 and row["prompt_drift_p"] > 0.05
    (found,) = [f for f in monitor.check_all("tickets") if f["alias"] == "staging"]
    assert found["verdict"]["state"] == "pass" and found["action"] is None
    assert incidents.all_incidents("tickets") == []

    _serve(staged, [_longer(ex) for ex in others[:100]], tok)  # then a third of the window is long
    row = live.window("tickets", 60)[f"tickets/{staged}"]
    assert 0.3 <= row["prompt_drift"] <= 0.34  # a third of the live prompts lie beyond every eval prompt
    assert row["prompt_tokens_p95"] > 2 * row["prompt_tokens_p50"]
    code, out, _ = lamina("monitor", "check", "tickets", "--json")
    assert code == 1
    (found,) = [f for f in json.loads(out) if f["alias"] == "staging"]
    assert found["verdict"]["breached"] == [GUARD] and found["action"]["incident"] == 1
    (incident,) = incidents.all_incidents("tickets")
    assert incident["versions"] == [staged] and GUARD in incident["summary"]
    code, out, _ = lamina("monitor", "tickets", "--json")
    (snap,) = json.loads(out)
    (mine,) = [v for v in snap["versions"] if v["version"] == f"tickets/{staged}"]
    assert mine["prompt_drift"] == pytest.approx(row["prompt_drift"]) and mine["prompt_drift_p"] < 1e-6


def test_drift_guard_acts_only_on_numbers_it_saw():
    (gate,) = guards.parse_guards([GUARD])
    no_reference = guards.judge([gate], {"requests": 50, "prompt_drift": None}, None, 20)
    assert no_reference.state == "pass" and no_reference.breached == []
    far = guards.judge([gate], {"requests": 50, "prompt_drift": 0.9}, None, 20)
    assert far.state == "breach" and far.breached[0].value == 0.9
