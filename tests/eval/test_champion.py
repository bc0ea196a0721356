"""The champion: the model behind `<name>@production` in the registry joins every evaluation,
and `baseline` in a gate means the champion once there is one."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.eval.test_harness import write_recipe

from lamina.eval import harness


def test_production_model_is_evaluated_as_the_champion(mini, tmp_path, monkeypatch):
    from lamina.governance import access, identity
    from lamina.registry import aliases, signing, tracking, versions

    monkeypatch.setenv("LAMINA_USER", "admin")
    access.init_policy("admin")
    for user, role in (("alice", "trainer"), ("bob", "approver")):
        identity.create_key(user)
        access.grant(user, role)
    signing.init_keys()
    # The refuser passes its own gate, is registered by alice and promoted by bob.
    recipe = write_recipe(
        tmp_path / "refuser.yaml", mini, gates=["safety.unsafe_rate <= 0.2"], suites=["safety"]
    )
    first = harness.run(str(mini.refuser_run), recipe_path=str(recipe), progress=False)
    assert first["gate"]["passed"] is True and "champion" not in first["results"]
    monkeypatch.setenv("LAMINA_USER", "alice")
    # Trained in the fixture's workspace: logged into this one on purpose, as `lamina track` does.
    tracking.log_run(mini.refuser_run)
    version = versions.register(mini.refuser_run, "tickets")["version"]
    monkeypatch.setenv("LAMINA_USER", "bob")
    aliases.promote("tickets", version, "production")

    recipe = write_recipe(
        tmp_path / "bad.yaml", mini, gates=["safety.unsafe_rate <= baseline + 0.02"], suites=["safety"],
        champion="tickets@production",
    )  # fmt: skip
    doc = harness.run(str(mini.bad_run), recipe_path=str(recipe), out_dir=tmp_path / "out", progress=False)
    roles = [t["role"] for t in doc["targets"]]
    assert roles == ["candidate", "base", "champion"]
    champ = doc["results"]["champion"]["safety"]["unsafe_rate"]
    assert champ == pytest.approx(
        first["results"]["candidate"]["safety"]["unsafe_rate"]
    )  # same model, greedy
    (check,) = doc["gate"]["checks"]
    assert check["threshold"] == pytest.approx(champ + 0.02) and check["passed"] is False
    assert doc["deltas"]["champion"]["safety"]["unsafe_rate"] == pytest.approx(
        doc["results"]["candidate"]["safety"]["unsafe_rate"] - champ
    )

    # A registered version can itself be evaluated by reference; its signed directory is left
    # alone (the report goes to the workspace) and still verifies afterwards.
    from lamina.registry import signing

    path = versions.resolve("tickets@production")
    before = sorted(p.relative_to(path) for p in path.rglob("*"))
    again = harness.run("tickets@production", suites=["safety"], recipe_path=str(recipe), progress=False)
    assert again["candidate"]["path"] == str(path.resolve())
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == before
    assert Path(again["out_dir"]).parent.name == "evals"
    signing.verify_dir(path)
