"""Reading training data in the forms people have it, as rows (dicts) with a place for errors.

A data reference is one of: a JSONL file, a JSON file holding an array of objects, a Parquet
file, a CSV or TSV file, a directory written by `datasets`' `save_to_disk`, or `hub:<id>`, a
dataset loaded through the `datasets` package (a Hugging Face Hub id, or anything else
`load_dataset` accepts), with a split (`hub:owner/name:test`, or the recipe's `data.split`) and a
revision. The kind follows the file's suffix;
anything without a known suffix is read as JSONL. Turning rows into records (ShareGPT,
Alpaca, column mappings) is data/shapes.py's job.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lamina import fsio
from lamina.errors import LaminaError

HUB_PREFIX = "hub:"
_SUFFIXES = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet",
    ".csv": "csv", ".tsv": "tsv",
}  # fmt: skip
_DATASETS_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


@dataclass
class Reference:
    """Where data is and how to read it; `read_as` is what provenance records."""

    ref: str
    kind: str  # jsonl | json | parquet | csv | tsv | datasets_dir | hub
    split: str | None = None
    revision: str | None = None
    resolved: dict[str, Any] = field(default_factory=dict)  # filled while reading (hub commit, fingerprint)

    @property
    def path(self) -> Path:
        return Path(self.ref)

    def read_as(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "hub":
            out |= {"id": self.ref, "split": self.split or "train", "revision": self.revision}
        elif self.kind == "datasets_dir":
            out["split"] = self.split
        return out | self.resolved


def is_hub(ref: str) -> bool:
    return str(ref).startswith(HUB_PREFIX)


def reference(ref: str | Path, split: str | None = None, revision: str | None = None) -> Reference:
    """Classify `ref`; fails with the path when there is nothing there."""
    text = str(ref)
    if is_hub(text):
        hub_id = text[len(HUB_PREFIX) :].strip()
        if ":" in hub_id and not Path(hub_id).exists():  # hub:owner/name:test names the split
            hub_id, _, named = hub_id.rpartition(":")
            split = split or named
        if not hub_id:
            raise LaminaError("`hub:` needs a dataset id, e.g. hub:owner/name", text)
        return Reference(hub_id, "hub", split, revision)
    path = Path(text)
    if path.is_dir():
        if not any((path / m).is_file() for m in _DATASETS_MARKERS):
            raise LaminaError("a data directory must be one written by `datasets` save_to_disk", text)
        return Reference(text, "datasets_dir", split)
    if not path.is_file():
        raise LaminaError("no such data file (a Hugging Face dataset is written hub:owner/name)", text)
    return Reference(text, _SUFFIXES.get(path.suffix.lower(), "jsonl"), split)


def iter_rows(ref: Reference) -> Iterator[tuple[str, Any]]:
    """(where, row) for every row; `where` names the file and line or row for errors."""
    readers = {
        "json": _json_rows, "parquet": _parquet_rows, "csv": _csv_rows, "tsv": _csv_rows,
        "datasets_dir": _datasets_dir_rows, "hub": _hub_rows, "jsonl": _jsonl_rows,
    }  # fmt: skip
    seen = False
    for item in readers[ref.kind](ref):
        seen = True
        yield item
    if not seen:
        raise LaminaError("the data has no records", ref.ref)


def _jsonl_rows(ref: Reference) -> Iterator[tuple[str, Any]]:
    with open(ref.path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{ref.ref}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise LaminaError(f"not valid UTF-8 (byte {e.start})", where) from None
            if not line.strip():
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                raise LaminaError(f"malformed JSON: {e.msg} (column {e.colno})", where) from None


def _json_rows(ref: Reference) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(ref.path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise LaminaError(f"not valid UTF-8 (byte {e.start})", ref.ref) from None
    except json.JSONDecodeError as e:
        # Some `.json` files are JSON Lines; read them as such rather than refuse them.
        if e.msg == "Extra data":
            yield from _jsonl_rows(ref)
            return
        raise LaminaError(f"malformed JSON: {e.msg} (line {e.lineno}, column {e.colno})", ref.ref) from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"data": [...]}, a common wrapper
    if not isinstance(data, list):
        raise LaminaError("a .json data file must hold an array of records (or be JSON Lines)", ref.ref)
    for i, row in enumerate(data):
        yield f"{ref.ref}[{i}]", row


def _parquet_rows(ref: Reference) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(ref.path)
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise LaminaError(f"not a readable Parquet file ({e})", ref.ref) from None
    row = 0
    for batch in file.iter_batches(batch_size=1024):
        for item in batch.to_pylist():
            row += 1
            yield f"{ref.ref}:row {row}", item


def _csv_rows(ref: Reference) -> Iterator[tuple[str, Any]]:
    delimiter = "\t" if ref.kind == "tsv" else ","
    try:
        with open(ref.path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            if not reader.fieldnames:
                return
            for row in reader:
                if None in row:
                    raise LaminaError("more cells than header columns", f"{ref.ref}:{reader.line_num}")
                yield f"{ref.ref}:{reader.line_num}", {k: v for k, v in row.items() if v is not None}
    except UnicodeDecodeError as e:
        raise LaminaError(f"not valid UTF-8 (byte {e.start})", ref.ref) from None
    except csv.Error as e:
        raise LaminaError(f"malformed CSV: {e}", ref.ref) from None


def _datasets_dir_rows(ref: Reference) -> Iterator[tuple[str, Any]]:
    import datasets

    ds = datasets.load_from_disk(ref.ref)
    if isinstance(ds, datasets.DatasetDict):
        split = ref.split or "train"
        if split not in ds:
            raise LaminaError(f"no split {split!r} (has {', '.join(ds)})", ref.ref)
        ds, ref.split = ds[split], split
    ref.resolved["fingerprint"] = ds._fingerprint
    for i, row in enumerate(ds):
        yield f"{ref.ref}:row {i + 1}", row


def _hub_rows(ref: Reference) -> Iterator[tuple[str, Any]]:
    import datasets

    split = ref.split or "train"
    try:
        builder = datasets.load_dataset_builder(ref.ref, revision=ref.revision)
        builder.download_and_prepare()
        ds = builder.as_dataset(split=split)
    except (FileNotFoundError, ConnectionError, ValueError) as e:
        raise LaminaError(f"cannot load the dataset: {e}", f"hub:{ref.ref}") from None
    # For a hub dataset, the builder's hash is the commit the revision resolved to: the
    # provenance that stays true when the branch moves on.
    ref.resolved |= {"resolved_revision": builder.hash, "fingerprint": ds._fingerprint}
    for i, row in enumerate(ds):
        yield f"hub:{ref.ref}[{split}]:row {i + 1}", row


def fingerprint(ref: Reference) -> str:
    """A cheap content id: the file's sha256, a digest of a directory's files, or the
    dataset id with its resolved commit."""
    if ref.kind == "datasets_dir":
        files = sorted(p for p in ref.path.rglob("*") if p.is_file())
        return fsio.sha256_json([[str(p.relative_to(ref.path)), fsio.sha256_file(p)] for p in files])
    if ref.kind == "hub":
        import datasets

        builder = datasets.load_dataset_builder(ref.ref, revision=ref.revision)
        return fsio.sha256_json([ref.ref, ref.split or "train", builder.hash])
    return fsio.sha256_file(ref.path)
