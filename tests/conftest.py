"""Shared fixtures: every test gets its own workspace; the tiny base model is built once."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch):
    """A fresh LAMINA_HOME per test, so no test writes outside its tmp dir."""
    home = tmp_path / "lamina-home"
    monkeypatch.setenv("LAMINA_HOME", str(home))
    return home
