"""The registry commands through `lamina.cli.main`: results on stdout, refusals as one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lamina.governance import audit


@pytest.fixture
def lamina(cli_factory):
    return cli_factory(user="alice")


def test_release_cycle_through_the_cli(runs, lamina):
    run_a, run_b = runs
    code, out, _ = lamina("register", str(run_a), "--name", "tickets", "--json")
    assert code == 0 and json.loads(out)["version"] == 1
    code, out, _ = lamina(
        "register", str(run_b), "--name", "tickets", "--intended-use", "Parse support tickets."
    )
    assert out.startswith("registered tickets/2 at ")
    card = (Path(out.split(" at ")[1].strip()) / "README.md").read_text()
    assert "## Intended use\nParse support tickets.\n" in card
    assert (
        lamina("promote", "tickets", "1", "--to", "production", user="bob")[1].strip()
        == "tickets@production: - -> 1"
    )
    assert lamina("promote", "tickets", "2", "--to", "production", user="bob")[0] == 0
    code, out, _ = lamina(
        "rollback", "tickets", "--alias", "production", "--reason", "bad answers", user="dana"
    )
    assert (code, out.strip()) == (0, "tickets@production: 2 -> 1 (rolled back: bad answers)")
    code, out, _ = lamina("history", "tickets", "--json")
    assert [e["op"] for e in json.loads(out)] == ["register", "register", "promote", "promote", "rollback"]
    code, out, _ = lamina("lineage", "tickets@production")
    assert code == 0 and "run      run-a" in out and "aliases  production" in out
    code, out, _ = lamina("lineage", "--dataset", "ds-tickets-001", "--json")
    assert [v["version"] for v in json.loads(out)["versions"]] == ["tickets/1", "tickets/2"]
    code, out, _ = lamina("verify", "tickets@production")
    assert code == 0 and "signature valid" in out
    code, out, _ = lamina("audit", "verify", "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    actions = [json.loads(line)["action"] for line in audit.log_path().read_text().splitlines()]
    # The runs were logged when they finished (make_run plays the trainer), not at register.
    assert actions[-7:] == ["track", "track", "register", "register", "promote", "promote", "rollback"]


def test_refusal_is_one_line_exit_2(runs, lamina):
    code, out, err = lamina("register", str(runs[0]), "--name", "tickets", user="vera")
    assert code == 2
    assert "lacks permission 'register'" in err and "Traceback" not in err and out == ""
    code, _, err = lamina("promote", "tickets", "1", "--to", "prod", user="bob")
    assert code == 2 and "unknown alias; use one of staging, production" in err
    code, _, err = lamina("lineage")
    assert code == 2 and "give either a reference" in err


def test_audit_verify_exit_1_on_tampering(runs, lamina):
    lamina("register", str(runs[0]), "--name", "tickets")
    lines = audit.log_path().read_text().splitlines()
    audit.log_path().write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    code, out, _ = lamina("audit", "verify")
    assert code == 1 and "entries deleted: seq 2" in out


def test_keys_init_refuses_overwrite(lamina, monkeypatch):
    code, out, _ = lamina("init", user="founder")
    assert code == 0 and "admin: founder" in out
    code, _, err = lamina("keys", "init", user="founder")
    assert code == 2 and "already exists" in err
    code, out, _ = lamina("keys", "init", "--force", user="founder")
    assert code == 0 and "fingerprint: sha256:" in out


def test_train_needs_the_train_permission(runs, lamina, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\ndata: {train: t.jsonl}\n")
    code, _, err = lamina("train", str(recipe), user="vera")
    assert code == 2 and "user 'vera' (roles: viewer) lacks permission 'train'" in err
    assert not (tmp_path / "lamina-home" / "runs").exists()


def test_track_grant_and_verify_commands(runs, lamina):
    from lamina.registry import tracking

    code, out, _ = lamina("track", str(runs[0]), "--json")
    assert code == 0 and json.loads(out)["mlflow_run_id"] == tracking.find_run("run-a")
    assert lamina("track", str(runs[0]), user="vera")[0] == 2
    code, out, _ = lamina("policy", "grant", "vera", "trainer", user="admin")
    assert (code, out.strip()) == (0, "vera: viewer, trainer")
    assert lamina("policy", "grant", "vera", "admin", user="vera")[0] == 2
    path = json.loads(lamina("register", str(runs[0]), "--name", "tickets", "--json")[1])["path"]
    (Path(path) / "README.md").write_text("edited card")
    code, _, err = lamina("verify", "tickets/1")
    assert code == 2 and "changed file README.md" in err
