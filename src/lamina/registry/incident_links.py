"""Incidents seen from the registry: the versions they affect, and the openings the registry
itself triggers (a tampered version caught at load, a withdrawn subject's data in a served version).

A version's signed directory (and the model card in it) never changes after registration, so
an incident is linked where the registry keeps mutable facts: the version's tag
`lamina.incidents` and the MLflow version description, which is the card page registry
users see.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lamina.errors import LaminaError
from lamina.fsio import read_json
from lamina.governance import incidents
from lamina.registry import tracking

log = logging.getLogger("lamina.incidents")
INCIDENTS_TAG = "lamina.incidents"


def link(record: dict) -> None:
    """Name the incident on every version it affects (tag and description line)."""
    c = tracking.client()
    for version in record["versions"]:
        with tracking.server_errors(f"linking incident {record['id']} to {record['model']}/{version}"):
            mv = c.get_model_version(record["model"], str(version))
            ids = [i for i in (mv.tags.get(INCIDENTS_TAG) or "").split(",") if i]
            if str(record["id"]) in ids:
                continue
            c.set_model_version_tag(
                record["model"], str(version), INCIDENTS_TAG, ",".join([*ids, str(record["id"])])
            )
            line = f"Incident {record['id']} ({record['severity']}, {record['opened']}): {record['summary'][:200]}"
            c.update_model_version(
                record["model"], str(version), description=f"{mv.description or ''}\n\n{line}".strip()
            )


def datasets_of(model: str, versions) -> list[str]:
    """The dataset versions the affected versions were trained on (their lineage tag): where a
    retrospective's lessons about the data belong."""
    c, found = tracking.client(), set()
    for version in versions:
        with tracking.server_errors(f"reading {model}/{version}"):
            tag = c.get_model_version(model, str(version)).tags.get("lamina.dataset_version")
        if tag and tag != "None":
            found.add(tag)
    return sorted(found)


def open_and_link(model: str, severity: str, summary: str, **kwargs) -> dict:
    if not kwargs.get("datasets") and kwargs.get("versions"):
        kwargs["datasets"] = datasets_of(model, kwargs["versions"])
    record = incidents.open_incident(model, severity, summary, **kwargs)
    link(record)
    return record


def tampered(path: Path, problem: str) -> dict | None:
    """A registered version failed its signature check: open an incident (once per version).
    Never raises: the refusal being reported must stay the error the caller sees."""
    try:
        return _tampered(path, problem)
    except Exception as e:  # noqa: BLE001
        log.warning("could not open an incident for tampered %s: %s", path, e)
        return None


def _tampered(path: Path, problem: str) -> dict | None:
    lineage_file = Path(path) / "lineage.json"
    if not lineage_file.is_file():
        return None  # not a registered version: the refusal is enough
    try:
        name = read_json(lineage_file)["name"]
    except (ValueError, KeyError, TypeError):
        return None
    version = _version_at(name, Path(path))
    if version is None:
        return None
    if incidents.open_for(name, version, "tampered_artifact"):
        return None
    from lamina.workspace import user

    record = open_and_link(
        name,
        "critical",
        f"version {version} failed its signature check at load: {problem[:300]}",
        versions=[version],
        signals={"tampered_artifact": 1},
        source="tampered_artifact",
        user=user(),
        details={"path": str(path)},
    )
    log.warning("incident %s opened: %s/%s tampered", record["id"], name, version)
    return record


def _version_at(name: str, path: Path) -> int | None:
    """The version of `name` registered at `path` (read with the tracking client alone: the
    signature check that calls this sits below the version store)."""
    try:
        found = tracking.client().search_model_versions(f"name = '{name}'")
    except Exception:  # no store, or a refusal: the signature refusal itself still stands
        return None
    for mv in found:
        if Path(mv.tags.get("lamina.path") or mv.source).resolve() == path.resolve():
            return int(mv.version)
    return None


def withdrawal_reached(subject_id: str, models: list[dict]) -> list[dict]:
    """Open an incident per model whose served versions (those behind an alias) were trained on
    a withdrawn subject's data. `models` are lineage rows {version: "name/N", aliases, ...}."""
    served: dict[str, dict] = {}
    for m in models:
        if not m.get("aliases"):
            continue
        name, _, number = m["version"].rpartition("/")
        entry = served.setdefault(name, {"versions": set(), "datasets": set()})
        entry["versions"].add(int(number))
        if m.get("dataset_version"):
            entry["datasets"].add(m["dataset_version"])
    opened = []
    from lamina.workspace import user

    for name, entry in sorted(served.items()):
        try:
            opened.append(
                open_and_link(
                    name,
                    "high",
                    f"a withdrawn data subject's records reached served versions {sorted(entry['versions'])}",
                    versions=sorted(entry["versions"]),
                    datasets=sorted(entry["datasets"]),
                    signals={"withdrawal_reached_served": len(entry["versions"])},
                    source="withdrawal",
                    user=user(),
                    details={"subject_sha256": _subject_digest(subject_id)},
                )
            )
        except LaminaError as e:  # the withdrawal itself is done; say why no incident was opened
            log.warning("no incident opened for %s: %s", name, e)
    return opened


def _subject_digest(subject_id: str) -> str:
    # The incident names the subject only by digest: the record outlives the withdrawal.
    from lamina.fsio import sha256_bytes

    return sha256_bytes(subject_id.encode())
