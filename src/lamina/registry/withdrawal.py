"""Withdrawal and retention across data and registry: the `lamina data forget` and `sweep` entry points.

lamina.data.intake.withdraw removes the records and rebuilds the dataset versions, and finds
the runs trained on them by their run.json files; here the registry's MLflow lineage adds
the runs logged elsewhere and the registered model versions built from them, and every
affected run is then marked "retrain required" in the catalog. It lives in the registry
because the registry sits above data: data never imports the registry.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from lamina.data.intake.withdraw import (
    WithdrawalReport,
    record_retrain_required,
    remove_expired,
    remove_subject,
)
from lamina.errors import LaminaError
from lamina.registry import incident_links, lineage, tracking


def forget_subject(subject_id: str) -> WithdrawalReport:
    """Remove every record of `subject_id` from sources and versions; list affected runs and models."""
    report, versions = remove_subject(subject_id)
    _registry_lineage(report, versions)
    report.incidents = [r["id"] for r in incident_links.withdrawal_reached(subject_id, report.models)]
    return record_retrain_required(report)


def sweep(today: dt.date | None = None) -> WithdrawalReport:
    """Remove every active source whose retention date has passed, rebuild what used it, list affected runs."""
    report, versions = remove_expired(today)
    _registry_lineage(report, versions)
    return record_retrain_required(report)


def _registry_lineage(report: WithdrawalReport, version_ids: set[str]) -> None:
    """Add runs and registered model versions the MLflow lineage knows for `version_ids`
    (runs logged elsewhere, and models fine-tuned from those models)."""
    uri = tracking.tracking_uri()
    if tracking.is_embedded(uri) and not Path(uri.removeprefix("sqlite:///")).exists():
        return  # nothing was ever registered in this workspace
    known = {r["run"] for r in report.runs}
    try:
        for vid in sorted(version_ids):
            info = lineage.for_dataset(vid)
            for r in info["runs"]:
                if r["run_id"] and r["run_id"] not in known:
                    known.add(r["run_id"])
                    report.runs.append({"run": r["run_id"], "path": None, "dataset_version": vid})
            report.models += [dict(m, dataset_version=vid) for m in info["versions"]]
    except LaminaError as e:
        report.lineage_note = f"registry lineage unavailable ({e}); runs found from run.json files only"
