"""Shared fixtures: every test gets its own workspace; the tiny base model is built once."""

from __future__ import annotations

import os
import sys
import tempfile

import pytest

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Private keys live outside the workspace, per user: never in the real home during tests.
os.environ.setdefault("LAMINA_CONFIG_DIR", tempfile.mkdtemp(prefix="lamina-config-"))


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch):
    """A fresh LAMINA_HOME per test, so no test writes outside its tmp dir."""
    home = tmp_path / "lamina-home"
    monkeypatch.setenv("LAMINA_HOME", str(home))
    # Beside the test's tmp dir, not in it: tests may assert on what tmp_path holds.
    monkeypatch.setenv("LAMINA_CONFIG_DIR", str(tmp_path.parent / f"{tmp_path.name}-lamina-config"))
    return home


@pytest.fixture(scope="session")
def tiny_random(tmp_path_factory):
    """A random-initialised tiny Llama (64 wide, 2 layers) with the bundled tokenizer, saved
    as a normal Hugging Face directory. Built once per session; treat it as read-only."""
    from lamina.models.tiny import save_untrained

    return save_untrained(tmp_path_factory.mktemp("tiny") / "random", seed=0, hidden_size=64,
                          intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2)


@pytest.fixture
def cli_factory(monkeypatch, capsys):
    """The CLI run in process through the same `main` as the `lamina` command:
    `cli_factory(user=...)` gives call(*args, user=...) -> (exit code, stdout, stderr)."""
    from lamina.cli import main

    def factory(user: str | None = None, merge_err: bool = False):
        def call(*args: str, user: str | None = user) -> tuple[int, str, str]:
            if user is not None:
                monkeypatch.setenv("LAMINA_USER", user)
            monkeypatch.setattr(sys, "argv", ["lamina", *args])
            try:
                main()
                code = 0
            except SystemExit as e:
                code = e.code or 0
            captured = capsys.readouterr()
            return code, captured.out, captured.out + captured.err if merge_err else captured.err

        return call

    return factory


@pytest.fixture(scope="session")
def _pristine_store(tmp_path_factory):
    """An empty, migrated MLflow sqlite store, made once (creating one costs seconds); the
    registry, serve and rollout fixtures copy it into each test's workspace."""
    from lamina.registry import tracking

    home = tmp_path_factory.mktemp("mlflow-template")
    previous = os.environ.get("LAMINA_HOME")
    os.environ["LAMINA_HOME"] = str(home)
    try:
        tracking.client().search_experiments()
    finally:
        if previous is None:
            os.environ.pop("LAMINA_HOME", None)
        else:
            os.environ["LAMINA_HOME"] = previous
    return home / "mlflow" / "mlflow.db"
