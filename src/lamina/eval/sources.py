"""Where an evaluation's records come from.

Training sees the masked records of a dataset version, so membership inference scores those
(the run's `data.dataset_path/train.jsonl`), and the held-out set is that version's eval
split — unless `eval.eval_file` names another. Raw recipe files are the fallback when there
is no version (a model evaluated without a run). Canaries are read from the raw training
file as well, because intake drops `meta` (where a canary is described) from versions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lamina import workspace
from lamina.data.formats import Example, Preference
from lamina.data.shapes import read_records, to_record
from lamina.errors import LaminaError
from lamina.governance import at_rest
from lamina.recipe import EvalSpec, Recipe

Source = tuple  # (path, record format[, column mapping of a raw recipe file])


@dataclass(frozen=True)
class Sources:
    eval: Source | None
    train: Source | None
    raw_train: Source | None


def _nonempty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _version_file(dataset: Path, name: str) -> Path | None:
    """A version's record file as stored: plain, or encrypted at rest (`name.enc`)."""
    stored = at_rest.locate(dataset / name)
    return stored if stored is not None and _nonempty(stored) else None


def _dataset_dir(recipe: Recipe | None, run: dict | None) -> Path | None:
    data = (run or {}).get("data") or {}
    if data.get("dataset_path") and Path(data["dataset_path"]).is_dir():
        return Path(data["dataset_path"])
    if run is None and recipe is not None and recipe.data.dataset:
        from lamina.data import catalog

        with catalog.session() as s:
            row = catalog.resolve_version(s, recipe.data.dataset)
        return workspace.home() / row.path
    return None


def _file(path: str | None, fmt: str, key: str) -> Source | None:
    if not path:
        return None
    if not Path(path).is_file():
        raise LaminaError(f"no such file {path}", key)
    return (str(path), fmt)


def resolve(spec: EvalSpec, recipe: Recipe | None, run: dict | None) -> Sources:
    data = (run or {}).get("data") or {}
    raw_fmt = recipe.data.format if recipe else data.get("format") or "chat"
    columns = recipe.data.columns if recipe else None
    version_fmt = data.get("format") or "chat"  # versions hold chat or preference records
    dataset = _dataset_dir(recipe, run)
    raw_train_path = (recipe.data.train if recipe else None) or data.get("train")
    raw_train = (raw_train_path, raw_fmt, columns) if raw_train_path and Path(raw_train_path).is_file() else None
    if spec.eval_file:
        # a model trained on preference pairs is still scored on task records
        eval_src = _file(spec.eval_file, "chat" if raw_fmt == "preference" else raw_fmt, "eval.eval_file")
    elif dataset is not None and _version_file(dataset, "eval.jsonl"):
        eval_src = (str(_version_file(dataset, "eval.jsonl")), version_fmt)
    else:
        eval_src = _file((recipe.data.eval if recipe else None) or data.get("eval"), raw_fmt, "data.eval")
        eval_src = eval_src and (*eval_src, columns)
    if dataset is not None and _version_file(dataset, "train.jsonl"):
        train_src = (str(_version_file(dataset, "train.jsonl")), version_fmt)
    else:
        train_src = raw_train
    return Sources(eval_src, train_src, raw_train)


def read(src: Source | None) -> list[Example]:
    """The chat examples of a source; a preference record counts as its prompt with the
    chosen reply, the text its training pushed up (what membership inference probes)."""
    if src is None:
        return []
    out = []
    # a raw recipe file may be any data form, with the recipe's column mapping as a third part
    for r in _records(src):
        if isinstance(r, Preference):
            r = Example([*r.prompt, {"role": "assistant", "content": r.chosen}], r.subject_id, r.meta)
        out.append(r)
    return out


def _records(src: Source) -> list:
    if not str(src[0]).endswith(at_rest.ENC):
        return read_records(src[0], src[1], src[2] if len(src) > 2 else None)
    plain = Path(str(src[0])[: -len(at_rest.ENC)])  # a version's records, decrypted in memory
    lines = enumerate(at_rest.iter_lines(plain), start=1)
    return [to_record(json.loads(line), src[1], None, f"{plain}:{n}") for n, line in lines if line.strip()]


def canaries(canary_file: str | None, train: list[Example]) -> list[dict]:
    """Canaries from `eval.canaries` (JSONL of {prefix, secret[, prompt]}), plus any raw
    training record carrying `meta.canary` in the same shape."""
    found: list[dict] = []
    if canary_file:
        path = Path(canary_file)
        if not path.is_file():
            raise LaminaError(f"no such file {path}", "eval.canaries")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise LaminaError(f"malformed JSON: {e.msg}", f"{path}:{n}") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("secret"), str) or not obj["secret"]:
                raise LaminaError(
                    "a canary needs a non-empty string `secret` (and optional `prefix`, `prompt`)",
                    f"{path}:{n}",
                )
            found.append(obj)
    for r in train:
        c = (r.meta or {}).get("canary")
        if isinstance(c, dict) and isinstance(c.get("secret"), str):
            found.append(c)
    return found
