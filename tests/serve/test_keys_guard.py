"""API keys (hash only, allow-lists, rate and token budgets, revocation at once, audited) and
the output guard (PII masked or blocked while streaming; training canaries blocked)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from serve_runs import client_for, issue_key, running

MESSAGES = [{"role": "user", "content": "my kettle arrived broken"}]


def test_keys_allow_lists_budgets_revocation_and_audit(registry, workspace):
    from lamina.governance import audit
    from lamina.registry.release import acting_as
    from lamina.serve import keys

    other = issue_key(user="faq-app", models=["faq"])
    limited = issue_key(user="slow-app", rate="2/m")
    budget = issue_key(user="small-app", tokens="20/h")
    plain = issue_key(user="app")
    stored = (workspace / "serve" / "keys.json").read_text()
    assert all(k.split("_", 2)[2] not in stored for k in (other, limited, budget, plain))  # only hashes kept
    with running(["tickets@production"]) as server:
        call = lambda key, **kw: client_for(server, key).chat.completions.create(  # noqa: E731
            model="tickets@production", messages=MESSAGES, max_tokens=kw.get("max_tokens", 4))
        with pytest.raises(openai.PermissionDeniedError):
            call(other)
        call(limited), call(limited)
        with pytest.raises(openai.RateLimitError) as e:
            call(limited)
        assert int(e.value.response.headers["retry-after"]) > 0
        first = client_for(server, budget).chat.completions.create(
            model="tickets@production", messages=MESSAGES, max_tokens=12)
        assert first.usage.total_tokens >= 20
        with pytest.raises(openai.RateLimitError) as e:
            call(budget)
        assert e.value.body["code"] == "token_budget_exceeded"
        call(plain)
        key_id = plain.split("_")[1]
        with acting_as("admin"):
            keys.revoke(key_id)
        with pytest.raises(openai.AuthenticationError) as e:
            call(plain)
        assert e.value.body["code"] == "revoked_key"
        metrics = httpx.get(f"http://127.0.0.1:{server.port}/metrics").text
        assert 'lamina_unauthorized_total{reason="revoked_key"} 1.0' in metrics
    log = [json.loads(line) for line in (workspace / "serve" / "requests.jsonl").read_text().splitlines()]
    assert {e["identity"] for e in log} >= {"slow-app", "small-app", "app"}
    assert all("prompt" not in e and "output" not in e for e in log)
    assert "kettle" not in (workspace / "serve" / "requests.jsonl").read_text()
    actions = [e["action"] for e in audit.entries()]
    assert actions.count("serve.key.issue") == 4 and actions.count("serve.key.revoke") == 1
    assert audit.verify().ok


def test_keys_need_the_keys_permission(registry):
    from lamina.errors import LaminaError
    from lamina.registry.release import acting_as
    from lamina.serve import keys

    with acting_as("alice"), pytest.raises(LaminaError, match="lacks permission 'keys'"):
        keys.issue("app")


@pytest.fixture(scope="module")
def guard():
    from lamina.serve.guard import Guard

    return Guard("mask", ["QXT-48213"], holdback=24)


def _stream(g, text: str, step: int = 3, stop=None) -> tuple[list[str], object]:
    out, s = [], g.stream(stop)
    for i in range(0, len(text), step):
        out.append(s.feed(text[i : i + step]))
    out.append(s.feed("", final=True))
    return out, s


def test_guard_masks_pii_across_chunks_and_never_sends_part_of_it(guard):
    text = "write to jane.roe@example.com or call +1 415 555 0134 today please"
    chunks, s = _stream(guard, text)
    sent = "".join(chunks)
    assert sent == "write to <EMAIL_ADDRESS> or call <PHONE_NUMBER> today please"
    assert not any("@" in c or "555" in c for c in chunks)
    assert sorted(k for k, _ in s.trips) == ["EMAIL_ADDRESS", "PHONE_NUMBER"]
    assert "".join(chunks[:-1]).startswith("write to <EMAIL_ADDRESS> or")  # text flows before the end


def test_guard_blocks_pii_and_canaries(guard):
    from lamina.serve.guard import Guard

    chunks, s = _stream(Guard("block", [], holdback=8), "hello there, mail jane.roe@example.com now")
    assert s.finish == "content_filter" and "@" not in "".join(chunks) and "hello" in "".join(chunks)
    chunks, s = _stream(guard, "the code is QXT-48213, keep it")
    assert s.finish == "content_filter" and "QXT" not in "".join(chunks) and s.trips == [("CANARY", "blocked")]
    chunks, s = _stream(guard, "one two three four", stop=["three"])
    assert "".join(chunks) == "one two " and s.finish == "stop"


def test_server_blocks_a_canary_the_model_would_say(registry, tmp_path):
    key = issue_key(user="app")
    with running(["tickets@production"]) as server:
        text = client_for(server, key).chat.completions.create(
            model="tickets@production", messages=MESSAGES, max_tokens=12, temperature=0).choices[0].message.content
    secret = text.strip()[-6:]
    spec = tmp_path / "canaries.jsonl"
    spec.write_text(json.dumps({"prefix": "code ", "secret": secret}) + "\n")
    from lamina.recipe import ServeSpec
    from lamina.serve.server import Server

    server = Server(["tickets@production"], ServeSpec(port=0), device="cpu", canaries=[spec])
    server.load()
    server.start_background()
    try:
        client = client_for(server, key)
        reply = client.chat.completions.create(model="tickets@production", messages=MESSAGES, max_tokens=12,
                                               temperature=0)
        assert reply.choices[0].finish_reason == "content_filter" and secret not in reply.choices[0].message.content
        chunks = list(client.chat.completions.create(model="tickets@production", messages=MESSAGES, max_tokens=12,
                                                     temperature=0, stream=True))
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert secret not in streamed and chunks[-1].choices[0].finish_reason == "content_filter"
        metrics = httpx.get(f"http://127.0.0.1:{server.port}/metrics").text
        assert 'kind="CANARY"' in metrics
    finally:
        server.close()


def test_request_log_writes_content_only_when_asked_and_then_masked(tmp_path, guard):
    from lamina.serve.reqlog import RequestLog

    plain = RequestLog(tmp_path / "a.jsonl")
    plain.write({"id": 1}, "mail jane.roe@example.com", "ok")
    assert json.loads((tmp_path / "a.jsonl").read_text()) == {"id": 1}
    with_content = RequestLog(tmp_path / "b.jsonl", content=True, masker=guard.masker)
    with_content.write({"id": 2}, "mail jane.roe@example.com", "call +1 415 555 0134")
    entry = json.loads((tmp_path / "b.jsonl").read_text())
    assert entry == {"id": 2, "prompt": "mail <EMAIL_ADDRESS>", "output": "call <PHONE_NUMBER>"}
