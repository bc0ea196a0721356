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

from lamina import workspace
from lamina.data import ops
from lamina.data.intake import withdraw
from lamina.data.intake.withdraw import WithdrawalReport, record_retrain_required
from lamina.errors import LaminaError
from lamina.governance import journal
from lamina.registry import incident_links, lineage, tracking


def forget_subject(subject_id: str, user: str | None = None) -> WithdrawalReport:
    """Remove every record of `subject_id` from sources and versions; list affected runs and
    models; one `data.forget` audit entry, even across a kill (the next command finishes it)."""
    return _withdrawal("data.forget", user, subject_id, {"subject": withdraw.subject_of(subject_id)})


def sweep(today: dt.date | None = None, user: str | None = None) -> WithdrawalReport:
    """Remove every active source whose retention date has passed, rebuild what used it, list
    affected runs; one `data.sweep` audit entry, even across a kill."""
    return _withdrawal("data.sweep", user, None, {"today": (today or dt.date.today()).isoformat()})


def _withdrawal(action: str, user: str | None, subject_id: str | None, what: dict) -> WithdrawalReport:
    """Intent, the data side, the registry's lineage, retrain marks, the audit entry. A retry
    of a withdrawal a kill interrupted gets the report of the run that finished it."""
    key = journal.args_key(action, **what)
    # An interrupted withdrawal of another subject is finished too, without this one's id.
    finish = {action: lambda intent: _finished(intent, subject_id if intent.key == key else None)}
    with ops.exclusive(finish) as settled:
        done = journal.settled_by_key(settled, key)
        if done is not None:
            report = WithdrawalReport.from_json(done["details"])
            report.already_done = True
            return report
        today = dt.date.fromisoformat(what["today"]) if "today" in what else None
        what = withdraw.plan(action, subject=what.get("subject"), today=today)
        intent = journal.begin(ops.DOMAIN, action, user or workspace.user(), key, **what)
        report = WithdrawalReport.from_json(_finished(intent, subject_id))
        journal.complete(intent, **report.to_json())
    return report


def _finished(intent: journal.Intent, subject_id: str | None) -> dict:
    """The withdrawal's data side (done now, or the rest of an interrupted one), then what
    the registry knows, incidents for served versions, and the retrain marks."""
    report, versions = withdraw.resume(intent)
    _registry_lineage(report, versions)
    if subject_id is not None:
        report.incidents = [r["id"] for r in incident_links.withdrawal_reached(subject_id, report.models)]
    return record_retrain_required(report).to_json()


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
