"""Lineage, both ways: from a version back to its data, and from a data version forward to
every run and registered version it reached (directly or through a parent version).

Backward reads the signed `lineage.json` inside each version directory; forward searches the
tags the tracking and registry stores carry (`lamina.dataset_version`, `lamina.parent`).
"""

from __future__ import annotations

import json

from lamina import workspace
from lamina.errors import LaminaError
from lamina.fsio import read_json
from lamina.registry import signing, tracking
from lamina.registry.versions import get_version, local_dir, model_lock, version_for


def _node(mv) -> dict:
    path = local_dir(mv)
    signing.verify_dir(path)  # lineage read from a tampered directory would be a lie
    record = read_json(path / "lineage.json")
    return {
        "name": mv.name,
        "version": int(mv.version),
        "aliases": sorted(mv.aliases or []),
        "path": str(path),
        "run_id": record["run_id"],
        "mlflow_run_id": record["mlflow_run_id"],
        "dataset_version": record.get("dataset_version"),
        "data": record.get("data") or {},
        "sources": record.get("sources") or [],
        "runs": record.get("runs") or [{"id": record["run_id"]}],
        "licence": record.get("licence"),
        "base": record.get("base") or {},
        "parent": record.get("parent"),
        "gate": record.get("gate"),
        "trained_by": record.get("trained_by"),
        "registered_by": record.get("registered_by"),
        "signer": record.get("signer"),
        "exports": json.loads(mv.tags.get(EXPORTS_TAG) or "[]"),
    }


EXPORTS_TAG = "lamina.exports"
_TAG_MAX = 5000  # MLflow's limit on a tag value


def add_export(mv, record: dict) -> None:
    """List an export under the version it came from (format, where, the files' digest)."""
    from lamina.fsio import sha256_json

    entry = {"format": record["format"], "path": record["path"], "by": record["by"],
             "files_sha256": sha256_json(record["files"]), "converter": record.get("converter")}  # fmt: skip
    c = tracking.client()
    with model_lock(mv.name), tracking.server_errors(f"recording the export of {mv.name}/{mv.version}"):
        current = c.get_model_version(mv.name, mv.version)
        exports = [*json.loads(current.tags.get(EXPORTS_TAG) or "[]"), entry]
        while len(json.dumps(exports)) > _TAG_MAX and len(exports) > 1:
            exports.pop(0)  # the oldest goes first; the audit log keeps every export
        c.set_model_version_tag(mv.name, mv.version, EXPORTS_TAG, json.dumps(exports))


def lineage(ref: str) -> dict:
    """The chain for `name@alias` or `name/version`: newest first, down to the first base."""
    chain, seen = [], set()
    mv = version_for(ref)
    while mv is not None:
        key = (mv.name, int(mv.version))
        if key in seen:
            raise LaminaError(f"lineage loops at {mv.name}/{mv.version}", ref)
        seen.add(key)
        node = _node(mv)
        chain.append(node)
        parent = node["parent"]
        mv = get_version(parent["name"], parent["version"]) if parent else None
    return {"ref": ref, "chain": chain}


def render(info: dict) -> str:
    """source → dataset version → run → version → aliases, for each link of the chain (oldest first)."""
    lines = [f"lineage of {info['ref']}"]
    for depth, node in enumerate(reversed(info["chain"])):
        pad = "  " * depth
        data = node["data"]
        sources = node["sources"] or [{"name": data.get("train"), "licence": node["licence"]}]
        lines += [
            f"{pad}source   {s.get('name')} (licence: {s.get('licence') or 'not recorded'})" for s in sources
        ]
        lines += [
            f"{pad}dataset  {node['dataset_version'] or 'raw files'} (train sha256 {str(data.get('train_sha256'))[:16]}…)",
            f"{pad}base     {node['base'].get('ref')}",
        ]
        for r in reversed(node["runs"][1:]):  # earlier stages this run continued, oldest first
            lines.append(
                f"{pad}run      {r['id']} (stage {r.get('stage') or r.get('objective')}, {r.get('method')})"
            )
        lines += [
            f"{pad}run      {node['run_id']} (mlflow {node['mlflow_run_id'][:12]}, trained by {node['trained_by']})",
            f"{pad}version  {node['name']}/{node['version']} (gate {'passed' if (node['gate'] or {}).get('passed') else '?'}, "
            f"signer {str(node['signer'])[:16]}…, registered by {node['registered_by']})",
            f"{pad}aliases  {', '.join(node['aliases']) or '(none)'}",
        ]
        lines += [f"{pad}export   {e['format']} -> {e['path']} (by {e['by']})" for e in node.get("exports", [])]
    return "\n".join(lines)


def _children(name: str, version: int) -> list:
    query = f"tags.`lamina.parent` = '{name}/{version}'"
    return list(tracking.client().search_model_versions(query))


def catalog_dataset_id(ref: str) -> str | None:
    """A dataset version's full id from its name or an id prefix (as the intake catalog
    resolves them); None when the catalog does not know it."""
    from lamina.data import catalog

    if not (workspace.home() / "catalog" / "catalog.db").is_file():
        return None
    with catalog.session() as s:
        try:
            return catalog.resolve_version(s, ref).id
        except LaminaError:
            return None


def _runs_on(dataset: str) -> list[dict]:
    """Runs tagged with the dataset, then the runs that continued them (DPO after SFT, ...)."""
    c, exp = tracking.client(), [tracking.experiment_id()]
    found: dict[str, dict] = {}
    queue: list[tuple[str, str | None]] = [
        (f"tags.`{tag}` = '{dataset}'", None)
        for tag in ("lamina.dataset_version", "lamina.data.train_sha256")
    ]
    while queue:
        query, via = queue.pop(0)
        for r in c.search_runs(exp, filter_string=query):
            rid = r.data.tags.get("lamina.run_id")
            if rid and rid not in found:
                found[rid] = {"mlflow_run_id": r.info.run_id, "run_id": rid, "via": via}
                queue.append((f"tags.`lamina.parent_run` = '{rid}'", rid))
    return list(found.values())


def for_dataset(dataset: str) -> dict:
    """Every run and version built on `dataset` (a dataset version id or a train sha256):
    directly, through later training stages, or fine-tuned from such a version."""
    known = catalog_dataset_id(dataset)
    # Not in this catalog, it may still tag runs (another workspace's version, a train sha256).
    dataset = known or dataset
    c = tracking.client()
    runs = _runs_on(dataset)
    versions = [(mv, None) for mv in c.search_model_versions(f"tags.`lamina.dataset_version` = '{dataset}'")]
    if known is None and not runs and not versions:
        raise LaminaError("no dataset version in the catalog and no tracked run on data of this id or sha256 "
                          "(see `lamina data list`)", f"--dataset {dataset}")
    for r in runs:
        versions += [(mv, None) for mv in c.search_model_versions(f"tags.`lamina.run_id` = '{r['run_id']}'")]
    versions.sort(key=lambda item: (item[0].name, int(item[0].version)))
    out, seen = [], set()
    while versions:
        mv, via = versions.pop(0)
        key = f"{mv.name}/{mv.version}"
        if key in seen:
            continue
        seen.add(key)
        out.append(
            {
                "version": key,
                "run_id": mv.tags.get("lamina.run_id"),
                # search results carry no aliases; a direct get does
                "aliases": sorted(c.get_model_version(mv.name, mv.version).aliases or []),
                "via": via,
            }
        )
        versions += [(child, key) for child in _children(mv.name, int(mv.version))]
    return {"dataset": dataset, "runs": runs, "versions": out}


def render_dataset(info: dict) -> str:
    lines = [f"built on dataset {info['dataset']}:"]
    for r in info["runs"]:
        via = f" (continued from run {r['via']})" if r["via"] else ""
        lines.append(f"  run      {r['run_id']} (mlflow {r['mlflow_run_id'][:12]}){via}")
    if not info["runs"]:
        lines.append("  no runs")
    for v in info["versions"]:
        via = f" (through parent {v['via']})" if v["via"] else ""
        lines.append(
            f"  version  {v['version']} from run {v['run_id']}{via}; aliases: {', '.join(v['aliases']) or '(none)'}"
        )
    if not info["versions"]:
        lines.append("  no registered versions")
    return "\n".join(lines)
