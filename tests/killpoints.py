"""Run the real `lamina` command line — in a child process killed at a named point
(lamina.faults), or in this process for the command that follows — and count audit entries;
shared by the kill-point tests."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys

import pytest

from lamina.governance import audit

# `lamina data add` provenance flags for the kill tests' sources
ADD = ["--licence", "cc-by-4.0", "--origin", "synthetic", "--purpose", "support bot",
       "--lawful-basis", "contract"]  # fmt: skip


def boundary(op: str) -> list:
    """(point, applied) cases at an operation's audit boundary: killed after the change (the
    default run), before it and after its entry (both slow)."""
    return [(f"{op}.applied", True),
            pytest.param(f"{op}.intent", False, marks=pytest.mark.slow),
            pytest.param(f"{op}.audited", True, marks=pytest.mark.slow)]


def lamina_cli(*args: str, user: str = "alice", kill: str | None = None) -> subprocess.CompletedProcess:
    """`lamina ARGS` as `user`; with `kill`, asserts the process died by SIGKILL at that point."""
    env = {k: v for k, v in os.environ.items() if k not in ("LAMINA_KILL_AT", "LAMINA_CRASH_AT")}
    env["LAMINA_USER"] = user
    if kill:
        env["LAMINA_KILL_AT"] = kill
    proc = subprocess.run([sys.executable, "-m", "lamina.cli.__main__", *args], env=env, capture_output=True,
                          text=True, timeout=600)
    if kill:
        assert proc.returncode == -signal.SIGKILL, (kill, proc.returncode, proc.stderr[-2000:])
    return proc


def entries(action: str) -> list[dict]:
    """The audit log's entries of one action, oldest first (details only)."""
    return [e["details"] for e in audit.entries() if e["action"] == action]


def lamina_main(*args: str, user: str = "alice") -> tuple[int, str, str]:
    """`lamina ARGS` as `user` through `lamina.cli.main` in this process (no interpreter start):
    (exit code, stdout, stderr)."""
    from lamina.cli import main

    saved_user, saved_argv = os.environ.get("LAMINA_USER"), sys.argv
    os.environ["LAMINA_USER"], sys.argv = user, ["lamina", *args]
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as e:
                code = e.code or 0
    finally:
        sys.argv = saved_argv
        if saved_user is None:
            os.environ.pop("LAMINA_USER", None)
        else:
            os.environ["LAMINA_USER"] = saved_user
    return code, out.getvalue(), err.getvalue()
