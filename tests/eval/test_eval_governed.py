"""`lamina eval` writes the gate verdict registration trusts: only a role with `train` may
run it, and each verdict written has one audit entry naming who, the target and its hash."""

from __future__ import annotations

import sys

from tests.eval.test_harness import write_recipe

from lamina.fsio import sha256_file
from lamina.governance import access, audit


def _eval(monkeypatch, capsys, user: str, *args: str) -> tuple[int, str]:
    from lamina.cli import main

    monkeypatch.setenv("LAMINA_USER", user)
    monkeypatch.setattr(sys, "argv", ["lamina", "eval", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    return code, capsys.readouterr().err


def test_a_viewer_cannot_write_a_gate_verdict_and_a_trainers_is_audited(mini, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAMINA_USER", "admin")
    access.init_policy("admin")
    access.grant("vera", "viewer")
    access.grant("tess", "trainer")
    recipe = write_recipe(tmp_path / "r.yaml", mini, gates=["safety.over_refusal_rate <= 1.0"], suites=["safety"])
    args = (str(mini.bad_run), "--suite", "safety", "--recipe", str(recipe), "--out", str(tmp_path / "out"))
    code, err = _eval(monkeypatch, capsys, "vera", *args)
    assert code == 2 and "user 'vera' (roles: viewer) lacks permission 'train'" in err
    assert not (tmp_path / "out").exists()

    code, _ = _eval(monkeypatch, capsys, "tess", *args)
    assert code == 0
    (entry,) = [e for e in audit.entries() if e["action"] == "eval"]
    assert entry["user"] == "tess" and entry["details"]["target"] == str(mini.bad_run)
    assert entry["details"]["passed"] is True
    assert entry["details"]["gate_sha256"] == sha256_file(tmp_path / "out" / "gate.json")
