"""Two `lamina eval` processes of one run at the same time: they take turns, so each
evaluation has exactly one audit entry — the second never settles the first one's live
intent (which used to record the first evaluation twice). And one killed before its entry
is recorded once, by the next evaluation of that gate."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

import pytest
from tests.eval.test_harness import write_recipe

from killpoints import lamina_cli, lamina_main
from lamina.fsio import sha256_file
from lamina.governance import access, audit


def _start(args: list[str], hold_at: str, marker) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("LAMINA_KILL_AT", "LAMINA_CRASH_AT")}
    env.update(LAMINA_USER="tess", LAMINA_HOLD_AT=hold_at, LAMINA_HOLD_FILE=str(marker))
    return subprocess.Popen([sys.executable, "-m", "lamina.cli.__main__", "eval", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow  # two evaluations in turn, and a 15 s window for the second to overtake
def test_two_evaluations_of_one_run_take_turns_and_each_is_recorded_once(mini, tmp_path, monkeypatch):
    monkeypatch.setenv("LAMINA_USER", "admin")
    access.init_policy("admin")
    access.grant("tess", "trainer")
    recipe = write_recipe(tmp_path / "r.yaml", mini, gates=["safety.over_refusal_rate <= 1.0"], suites=["safety"])
    args = [str(mini.bad_run), "--suite", "safety", "--recipe", str(recipe), "--out", str(tmp_path / "out")]
    first_held, second_held = tmp_path / "first.held", tmp_path / "second.held"
    # The first writes its gate, then stops before its audit entry, its intent still on disk.
    first = _start(args, "eval.applied", first_held)
    second = None
    try:
        assert _wait_for(first_held, 240), first.stderr.read() if first.poll() is not None else "no hold"
        second = _start(args, "eval.intent", second_held)
        # Unlocked, the second settles the first's intent and reaches its own within seconds;
        # locked, it waits for the first to finish.
        overtook = _wait_for(second_held, 15)
        first_held.unlink()
        assert first.wait(240) == 0, first.stderr.read()
        if not overtook:  # it has been waiting for the lock; now it reaches its intent
            assert _wait_for(second_held, 240), second.stderr.read() if second.poll() is not None else "no hold"
        second_held.unlink()
        assert second.wait(240) == 0, second.stderr.read()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert not overtook, "the second evaluation ran while the first held its gate"
    evals = [e for e in audit.entries() if e["action"] == "eval"]
    ops = Counter(e["details"]["op"] for e in evals)
    assert len(evals) == 2 and sorted(ops.values()) == [1, 1], evals
    assert not any(e["details"].get("settled") for e in evals)
    assert evals[-1]["details"]["gate_sha256"] == sha256_file(tmp_path / "out" / "gate.json")
    assert audit.verify().ok


def test_an_evaluation_killed_before_its_entry_is_recorded_once_by_the_next(mini, tmp_path, monkeypatch):
    monkeypatch.setenv("LAMINA_USER", "admin")
    access.init_policy("admin")
    access.grant("tess", "trainer")
    recipe = write_recipe(tmp_path / "r.yaml", mini, gates=["safety.over_refusal_rate <= 1.0"], suites=["safety"])
    args = ("eval", str(mini.bad_run), "--suite", "safety", "--recipe", str(recipe), "--out", str(tmp_path / "out"))
    lamina_cli(*args, user="tess", kill="eval.applied")
    first = sha256_file(tmp_path / "out" / "gate.json")
    assert [e for e in audit.entries() if e["action"] == "eval"] == []
    code, _, err = lamina_main(*args, user="tess")
    assert code == 0, err
    evals = [e["details"] for e in audit.entries() if e["action"] == "eval"]
    assert [(d.get("settled", False), d["gate_sha256"]) for d in evals] == [
        (True, first), (False, sha256_file(tmp_path / "out" / "gate.json"))]
    assert len({d["op"] for d in evals}) == 2 and audit.verify().ok
