"""What a registry version is when served: its directory (signature verified), its method and
how that method can be served, its base (file hashes checked against the ones recorded when
it was trained), and the hashes a response names.

`artifact_sha256` is one digest over the version's artifact files (`adapter/` or `model/`):
the canonical JSON of {path relative to that directory: sha256}, taken from the signature's
verified manifest. It is the same digest as the MLflow run's `lamina.artifact_sha256` tag
(`tracking.dir_sha256`), so a response can be matched to the run that trained it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lamina.errors import LaminaError
from lamina.fsio import read_json, sha256_json
from lamina.governance import at_rest
from lamina.methods import SERVING
from lamina.rundir import RUN_JSON, TOKENIZER

_base_checked: dict[tuple, str] = {}


@dataclass(frozen=True)
class Version:
    name: str
    number: int
    path: Path
    method: str
    artifact: str
    artifact_sha256: str
    base_path: Path | None
    base_sha256: str | None
    signer: str

    @property
    def key(self) -> str:
        return f"{self.name}/{self.number}"

    @property
    def mode(self) -> str:
        return SERVING[self.method]

    @property
    def artifact_dir(self) -> Path:
        return self.path / self.artifact

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / TOKENIZER if (self.path / TOKENIZER).is_dir() else self.base_path or self.artifact_dir

    def base_key(self) -> tuple:
        """Versions with equal keys share one loaded base (QLoRA's 4-bit base is its own)."""
        return (self.base_sha256, self.method == "qlora")


def check_base(path: Path, recorded: dict, where: str) -> str:
    """Refuse a base whose weights, config or tokenizer differ from what the version was trained on.
    Returns the base's digest (sha256 of its recorded file hashes). Checked once per process
    for an unchanged directory: hashing an 8B base takes tens of seconds."""
    from lamina.registry.signing import check_before_load

    files = (recorded or {}).get("files") or {}
    if not path.is_dir():
        raise LaminaError(f"the base model directory {path} is gone", where)
    if not files:
        raise LaminaError("the version records no base file hashes; cannot check its base", where)
    names = {*files, *((recorded or {}).get("tokenizer_files") or {})}
    stored = {n: at_rest.locate(path / n) for n in names}  # weights may be stored encrypted
    stamp = tuple(sorted((n, p.name, p.stat().st_mtime_ns, p.stat().st_size) for n, p in stored.items() if p))
    cache_key = (str(path), stamp)
    if cache_key not in _base_checked:
        check_before_load(path)  # a signed or registered base must also verify its signature
        for name, digest in sorted({**files, **((recorded or {}).get("tokenizer_files") or {})}.items()):
            if stored.get(name) is None:
                raise LaminaError(f"base file {name} is missing", str(path))
            if at_rest.plain_sha256(path / name) != digest:
                raise LaminaError(f"base file {name} changed since the version was trained", str(path))
        _base_checked[cache_key] = sha256_json(files)
    return _base_checked[cache_key]


def open_version(name: str, number: int) -> Version:
    """The version `name/number`, signature verified and base checked, ready to load."""
    from lamina.registry import signing, versions

    mv = versions.get_version(name, number)
    path, signer = versions.verify_version(mv)  # signature holds, as the signer recorded at registration
    run = read_json(path / RUN_JSON)
    method = (run.get("method") or {}).get("name")
    if method not in SERVING:
        raise LaminaError(f"cannot serve method {method!r}", f"{name}/{number}")
    artifact = versions.artifact_kind(path)
    listed = at_rest.plain_listing(path, signing.signed_files(path))  # sealed files by their plaintext
    prefix = f"{artifact}/"
    artifact_sha = sha256_json({k[len(prefix):]: v for k, v in listed.items() if k.startswith(prefix)})
    base_path, base_sha = None, None
    if artifact == "adapter":
        base_path = Path((run.get("base") or {}).get("path") or "")
        base_sha = check_base(base_path, run.get("base") or {}, f"{name}/{number} {RUN_JSON}: base")
    return Version(name, int(number), path, method, artifact, artifact_sha, base_path, base_sha, signer)
