"""Hot swap: promote and rollback under streaming load switch the served version within
seconds, with no failed request, each answered by a version live when it started; a tampered
version behind a moved alias is refused while the old one keeps serving."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from serve_runs import client_for, issue_key, running

MESSAGES = [{"role": "user", "content": "where is my order"}]


def _load(server, key, stop: threading.Event, results: list, errors: list) -> None:
    client = client_for(server, key)
    while not stop.is_set():
        started = time.time()
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="tickets@production", messages=MESSAGES, max_tokens=6, temperature=0, stream=True)
            chunks = list(raw.parse())
            versions = {c.lamina["version"] for c in chunks}
            assert versions == {raw.headers["x-lamina-version"]}
            assert chunks[-1].choices[0].finish_reason in ("length", "stop")
            results.append((started, time.time(), raw.headers["x-lamina-version"]))
        except Exception as e:  # every failure is a test failure, collected for the message
            errors.append(repr(e))


def _wait_for(server, key: str, since: float, timeout: float = 5.0) -> float:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for e in server.swap_events:
            if e["to"] == key and e["outcome"] == "ok" and e["time"] >= since:
                return e["time"] - since
        time.sleep(0.02)
    raise AssertionError(f"not switched to {key} within {timeout} s: {server.swap_events}")


def _answered_by(results: list, key: str, since: float, timeout: float = 20.0) -> None:
    """Wait until a request that started after `since` was answered by `key`."""
    deadline = time.time() + timeout
    while not any(v == key and start >= since for start, _, v in results):
        assert time.time() < deadline, f"no request answered by {key}"
        time.sleep(0.05)


def _swap_under_load(registry, streams: int, rounds: int) -> None:
    from lamina.registry import aliases
    from lamina.registry.release import acting_as

    numbers = registry
    key = issue_key(user="loadgen")
    with running(["tickets@production"], max_batch=streams) as server:
        stop, results, errors = threading.Event(), [], []
        threads = [threading.Thread(target=_load, args=(server, key, stop, results, errors)) for _ in range(streams)]
        for t in threads:
            t.start()
        timeline = [(0.0, f"tickets/{numbers[0]}")]
        try:
            time.sleep(0.5)
            for new in [numbers[1], numbers[2]][:rounds]:
                moved = time.time()
                with acting_as("bob"):
                    aliases.promote("tickets", new, "production", reason="swap test")
                timeline.append((moved + _wait_for(server, f"tickets/{new}", moved), f"tickets/{new}"))
                _answered_by(results, f"tickets/{new}", timeline[-1][0])
                moved = time.time()
                with acting_as("admin"):
                    aliases.rollback("tickets", "production", reason="swap test")
                timeline.append((moved + _wait_for(server, f"tickets/{numbers[0]}", moved), f"tickets/{numbers[0]}"))
                _answered_by(results, f"tickets/{numbers[0]}", timeline[-1][0])
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        assert errors == []
        assert len(results) >= streams * 2
        for started, ended, version in results:
            # the version routed when the request was sent, or one switched to before it was
            # answered (the server picks on arrival, a moment after the client sends)
            live = [v for t, v in timeline if t <= started][-1:] + [v for t, v in timeline if started < t <= ended]
            assert version in live, (started, version, timeline)
        seen = {v for _, _, v in results}
        assert {f"tickets/{n}" for n in numbers[: rounds + 1]} <= seen
        # every retired version was freed once its requests were done
        time.sleep(0.5)
        assert set(server.pool.served) == {f"tickets/{numbers[0]}"}


def test_promote_and_rollback_twice_under_streaming_load(registry):
    _swap_under_load(registry, streams=8, rounds=2)


@pytest.mark.slow
def test_promote_and_rollback_under_16_streams(registry):
    _swap_under_load(registry, streams=16, rounds=2)


def test_tampered_or_outside_moves_are_refused_while_the_old_version_serves(registry):
    from lamina.registry import aliases, tracking, versions
    from lamina.registry.release import acting_as

    numbers = registry
    key = issue_key(user="app")
    with running(["tickets@production"], poll_s=3600) as server:  # polled by hand below
        base = f"http://127.0.0.1:{server.port}"
        state = server.watcher.states["tickets@production"]
        with acting_as("bob"):
            aliases.promote("tickets", numbers[1], "production", reason="tamper test")
        weights = versions.local_dir(versions.get_version("tickets", numbers[1])) / "adapter" / "adapter_model.safetensors"
        data = bytearray(weights.read_bytes())
        data[-1] ^= 1
        weights.write_bytes(bytes(data))  # edited after the promote checked it
        server.watcher.poll_once()
        ready = httpx.get(f"{base}/readyz").json()["refs"]["tickets@production"]
        assert ready["serving"] == f"tickets/{numbers[0]}" and ready["refused"] == f"tickets/{numbers[1]}"
        assert "changed file adapter/adapter_model.safetensors" in ready["error"]
        metrics = httpx.get(f"{base}/metrics").text
        assert f'lamina_refused_version{{ref="tickets@production",version="tickets/{numbers[1]}"}} 1.0' in metrics
        raw = client_for(server, key).chat.completions.with_raw_response.create(
            model="tickets@production", messages=MESSAGES, max_tokens=3)
        assert raw.headers["x-lamina-version"] == f"tickets/{numbers[0]}"
        # moved with MLflow's own API (as its UI does): no gate, no four eyes, no record — refused
        tracking.client().set_registered_model_alias("tickets", "production", str(numbers[2]))
        server.watcher.poll_once()
        assert state.serving == numbers[0] and state.refused == numbers[2] and "outside Lamina" in state.error
        # put back where Lamina's record says: nothing refused any more
        tracking.client().set_registered_model_alias("tickets", "production", str(numbers[1]))
        with acting_as("admin"):
            aliases.rollback("tickets", "production", reason="tampered")
        server.watcher.poll_once()
        assert state.serving == numbers[0] and state.refused is None
        assert httpx.get(f"{base}/readyz").json()["refs"]["tickets@production"]["error"] is None
