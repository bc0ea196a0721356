"""Input drift on a real server (loopback, openai client): the prompts of the version's eval set
sent as chat requests are counted token for token as the eval counted them (distance 0), and
prompts longer than any of them move `lamina_prompt_drift` and `live.prompt_drift` together."""

from __future__ import annotations

from serve_runs import EVAL_PROMPTS, client_for, issue_key, running
from test_rollout_live import _metrics


def test_prompt_drift_from_the_eval_set_on_metrics_and_in_the_live_window(registry):
    from lamina.rollout import live

    v1 = registry[0]
    key = issue_key(user="loadgen")
    series = f'lamina_prompt_drift{{version="tickets/{v1}"}}'
    with running(["tickets@production"]) as server:
        client = client_for(server, key)

        def send(prompts):
            for messages in prompts:
                client.chat.completions.create(model="tickets@production", messages=messages, max_tokens=1,
                                               temperature=0)

        assert series not in _metrics(server, key)  # nothing answered yet: no value, not a zero
        send(EVAL_PROMPTS)
        assert _metrics(server, key)[series] == 0.0  # the eval set itself: the same token counts
        longer = [[{"role": "user", "content": " ".join([m[0]["content"]] * 3) + " " + EVAL_PROMPTS[6][0]["content"]}]
                  for m in EVAL_PROMPTS]
        send(longer)
        metrics = _metrics(server, key)
    # Half the live prompts lie beyond the longest eval prompt: the CDFs part by exactly one half.
    assert metrics[series] == 0.5
    row = live.window("tickets", 60)[f"tickets/{v1}"]
    assert row["requests"] == 20 and row["prompt_drift"] == 0.5
