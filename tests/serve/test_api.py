"""The OpenAI API as the official `openai` client sees it, on a real server on loopback."""

from __future__ import annotations

import httpx
import openai
import pytest
from serve_runs import client_for, issue_key, running

MESSAGES = [{"role": "user", "content": "my kettle arrived broken"}]


@pytest.fixture
def served(registry):
    key = issue_key(user="app", models=["tickets"])
    with running(["tickets@production"]) as server:
        yield server, key, registry


def test_chat_completion_names_its_version_and_matches_offline_greedy(served, tiny_random):
    from lamina.methods.trained import load_model
    from lamina.registry import versions

    server, key, numbers = served
    raw = client_for(server, key).chat.completions.with_raw_response.create(
        model="tickets@production", messages=MESSAGES, max_tokens=12, temperature=0)
    reply = raw.parse()
    v = server.pool.served[f"tickets/{numbers[0]}"].version
    assert raw.headers["x-lamina-version"] == f"tickets/{numbers[0]}"
    assert raw.headers["x-lamina-artifact-sha256"] == v.artifact_sha256 == reply.lamina["artifact_sha256"]
    # the same digest as the MLflow run's tag for the trained adapter
    mv = versions.get_version("tickets", numbers[0])
    from lamina.registry import tracking

    assert tracking.client().get_run(mv.run_id).data.tags["lamina.artifact_sha256"] == v.artifact_sha256
    assert reply.usage.completion_tokens == 12 and reply.choices[0].finish_reason == "length"
    # what plain transformers generate gives for the same adapter, greedy
    from lamina.models.generate import generate

    model, tok = load_model(versions.local_dir(mv))
    expected = generate(model, tok, [MESSAGES], max_new_tokens=12)[0]
    assert reply.choices[0].message.content.strip() == expected


def test_stream_with_usage_equals_the_non_streamed_answer(served):
    server, key, _ = served
    client = client_for(server, key)
    whole = client.chat.completions.create(model="tickets@production", messages=MESSAGES, max_tokens=10,
                                           temperature=0).choices[0].message.content
    chunks = list(client.chat.completions.create(model="tickets@production", messages=MESSAGES, max_tokens=10,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert all(c.lamina["version"] == chunks[0].lamina["version"] for c in chunks)


def test_completions_seed_n_and_stop(served):
    server, key, _ = served
    client = client_for(server, key)
    kw = {"model": "tickets@production", "prompt": "order 4821", "max_tokens": 8, "temperature": 1.0, "seed": 7}
    a = client.completions.create(n=2, **kw)
    b = client.completions.create(n=2, **kw)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]  # seeded: reproducible
    assert a.usage.completion_tokens == 16
    greedy = client.completions.create(model="tickets@production", prompt="order 4821", max_tokens=8,
                                       temperature=0).choices[0].text
    stop = greedy.strip().split()[1] if len(greedy.split()) > 1 else greedy.strip()[2:4]
    cut = client.completions.create(model="tickets@production", prompt="order 4821", max_tokens=8, temperature=0,
                                    stop=[stop]).choices[0]
    assert cut.finish_reason == "stop" and cut.text == greedy[: greedy.find(stop)]


def test_errors_are_openai_errors(served):
    server, key, _ = served
    client = client_for(server, key)
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="tickets@staging", messages=MESSAGES)
    assert "tickets@production" in str(e.value)  # names what is servable
    with pytest.raises(openai.AuthenticationError):
        client_for(server, "lmn_000000000000_" + "x" * 43).chat.completions.create(
            model="tickets@production", messages=MESSAGES)
    with pytest.raises(openai.AuthenticationError):
        client_for(server, None).models.list()
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="tickets@production", messages=MESSAGES, max_tokens=100000)
    assert e.value.status_code == 413
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tickets@production", messages=MESSAGES, temperature=5)
    big = httpx.post(f"http://127.0.0.1:{server.port}/v1/completions", headers={"Authorization": f"Bearer {key}"},
                     content=b"{" + b" " * (2 << 20) + b"}", timeout=30)
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    bad = httpx.post(f"http://127.0.0.1:{server.port}/v1/completions", headers={"Authorization": f"Bearer {key}"},
                     content=b"{not json", timeout=30)
    assert bad.status_code == 400 and "Traceback" not in bad.text
    models = client.models.list().data
    assert [m.id for m in models] == ["tickets@production"] and models[0].parent.startswith("sha256:")


def test_health_ready_metrics(served):
    server, key, numbers = served
    base = f"http://127.0.0.1:{server.port}"
    client_for(server, key).chat.completions.create(model="tickets@production", messages=MESSAGES, max_tokens=3)
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{base}/readyz").json()
    assert ready["ready"] and ready["refs"]["tickets@production"]["serving"] == f"tickets/{numbers[0]}"
    text = httpx.get(f"{base}/metrics").text
    assert f'lamina_requests_total{{endpoint="/v1/chat/completions",status="200",version="tickets/{numbers[0]}"}} 1.0' in text
    assert f'lamina_output_tokens_total{{version="tickets/{numbers[0]}"}} 3.0' in text
