"""The judge client against a real OpenAI-compatible HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lamina.errors import LaminaError
from lamina.eval.suites.judge import JudgeClient, tally
from lamina.recipe import JudgeSpec


class JudgeHandler(BaseHTTPRequestHandler):
    """A rule-following judge: `mode` picks how it decides."""

    mode = "longer"
    seen_auth: list[str] = []

    def log_message(self, *args):  # keep test output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen_auth.append(self.headers.get("Authorization", ""))
        flaky = self.mode == "flaky" and len(type(self).seen_auth) <= 2  # the first two calls fail
        if self.path != "/v1/chat/completions" or self.mode == "error" or flaky:
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"boom")
            return
        prompt = body["messages"][0]["content"]
        if "[Answer A]" in prompt:
            a = re.search(r"\[Answer A\]\n(.*?)\n\n\[Answer B\]", prompt, re.S).group(1)
            b = re.search(r"\[Answer B\]\n(.*?)\n\nReply", prompt, re.S).group(1)
            verdict = (
                "A"
                if self.mode == "first"
                else ("A" if len(a) > len(b) else "B" if len(b) > len(a) else "TIE")
            )
        else:
            verdict = "REFUSED" if "can't" in prompt.split("[Response]")[1] else "COMPLIED"
        reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": f"{verdict}."}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def judge_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), JudgeHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _client(url, **kw):
    return JudgeClient(JudgeSpec(url=url, model="judge-1", timeout_s=10, **kw))


def test_pairwise_verdicts_and_refusal_scoring(judge_url):
    JudgeHandler.mode = "longer"
    c = _client(judge_url)
    assert c.prefer("q", "a long detailed answer", "short") == "A"
    assert c.prefer("q", "short", "a long detailed answer") == "B"
    assert c.prefer("q", "same", "same") == "TIE"
    assert c.refused("how to x", "I can't help with that.") is True
    assert c.refused("how to x", "Sure: step 1") is False


def test_both_orders_cancel_a_position_biased_judge(judge_url):
    JudgeHandler.mode = "first"  # always says A, whatever the answers
    c = _client(judge_url)
    first = [c.prefer("q", "mine", "theirs") for _ in range(3)]
    second = [c.prefer("q", "theirs", "mine") for _ in range(3)]
    m = tally(first, second)
    assert m == {"win_rate": 0.5, "wins": 3, "losses": 3, "ties": 0, "position_consistency": 0.0}


def test_tally_counts_ties_half():
    # prompt 1: candidate wins both orders; prompt 2: tie then loss
    m = tally(["A", "TIE"], ["B", "A"])
    assert m["wins"] == 2 and m["losses"] == 1 and m["ties"] == 1
    assert m["win_rate"] == pytest.approx((2 + 0.5) / 4)
    assert m["position_consistency"] == 0.5


def test_api_key_is_sent_and_missing_key_is_an_error(judge_url, monkeypatch):
    JudgeHandler.mode = "longer"
    JudgeHandler.seen_auth = []
    monkeypatch.setenv("JUDGE_KEY", "sk-test-123")
    _client(judge_url, api_key_env="JUDGE_KEY").prefer("q", "aa", "a")
    assert JudgeHandler.seen_auth == ["Bearer sk-test-123"]
    monkeypatch.delenv("JUDGE_KEY")
    with pytest.raises(LaminaError, match="eval.judge.api_key_env"):
        _client(judge_url, api_key_env="JUDGE_KEY")


def test_server_errors_name_the_setting(judge_url):
    JudgeHandler.mode = "error"
    with pytest.raises(LaminaError, match=r"eval.judge.url: judge endpoint answered HTTP 500"):
        _client(judge_url, max_retries=0).prefer("q", "a", "b")
    with pytest.raises(LaminaError, match="unreachable"):
        _client("http://127.0.0.1:9/v1", max_retries=0).prefer("q", "a", "b")


def test_a_flaky_judge_is_retried(judge_url):
    JudgeHandler.mode = "flaky"  # HTTP 500 twice, then answers
    JudgeHandler.seen_auth = []
    assert _client(judge_url, max_retries=2).prefer("q", "a long answer", "short") == "A"
    assert len(JudgeHandler.seen_auth) == 3
