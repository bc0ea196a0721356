"""Incidents: who owns a problem in production, who must be told by when, and how it ended.

One JSON file per incident in `<workspace>/incidents/NNNNNN.json`, written atomically under a
lock. The policy (`incidents:` in policy.yaml) names per model an owner, escalation contacts
and disclosure triggers (signal, contacts, deadline); an incident carrying a signal above a
trigger's threshold lists who must be told by when, and stays overdue until each disclosure
is recorded as made. While a model has an open incident its promotions are frozen. Closing
needs a retrospective file, copied into the record. Every step is in the audit log.
"""

from __future__ import annotations

import contextlib
import fcntl
import textwrap
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

from lamina import workspace
from lamina.errors import LaminaError
from lamina.fsio import read_json, sha256_bytes, write_json
from lamina.governance import access, audit, journal
from lamina.recipe import IncidentPolicySpec, PolicySpec

SEVERITIES = ("low", "medium", "high", "critical")
SOURCES = ("manual", "guard_breach", "tampered_artifact", "withdrawal", "monitor")
MAX_RETRO_BYTES = 1 << 20


def root() -> Path:
    # Not created by reading: a refused promotion (which asks for open incidents) leaves no trace.
    return workspace.home() / "incidents"


def _path(n: int) -> Path:
    return root() / f"{int(n):06d}.json"


@contextlib.contextmanager
def _locked() -> Iterator[list[dict]]:
    # Two processes opening incidents at once would take the same number. The holder first
    # settles what a killed incident command left (lamina.governance.journal), and gets it.
    root().mkdir(exist_ok=True)
    with open(root() / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            settled = []
            if journal.pending(DOMAIN):
                settled = journal.settle(DOMAIN, dict.fromkeys(
                    ("incident.open", "incident.notified", "incident.close"), _applied))
            yield settled
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


DOMAIN = "incidents"


def _applied(intent: journal.Intent) -> dict | None:
    """Whether an incident change a kill interrupted reached its record (each change writes
    its operation id into the record it changes, in the same write)."""
    n = intent.details.get("incident")
    paths = [_path(n)] if n is not None else sorted(root().glob("[0-9]*.json"))
    for path in paths:
        record = read_json(path) if path.is_file() else {}
        if intent.op_id in record.get("ops", []):
            return {"incident": record["id"]}
    return None


def _write(record: dict, op: journal.Intent) -> None:
    """Write an incident record, marked with the operation that changed it."""
    record["ops"] = [*record.get("ops", []), op.op_id]
    write_json(_path(record["id"]), record)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


def responsibility(model: str, policy: PolicySpec) -> IncidentPolicySpec | None:
    return policy.incidents.get(model) or policy.incidents.get("*")


def _owner(model: str, policy: PolicySpec) -> str:
    spec = responsibility(model, policy)
    if spec is not None:
        return spec.owner
    admins = [u for u, roles in policy.users.items() if "admin" in roles]
    return admins[0] if admins else workspace.user()


def disclosures(model: str, signals: dict[str, float], opened: datetime, policy: PolicySpec) -> list[dict]:
    """The policy's triggers that `signals` fire, each with its contacts and deadline."""
    spec = responsibility(model, policy)
    fired = []
    for trigger in spec.disclosure if spec else []:
        value = signals.get(trigger.signal)
        if value is None or float(value) <= trigger.above:
            continue
        fired.append(
            {
                "signal": trigger.signal,
                "value": float(value),
                "notify": list(trigger.notify),
                "deadline": _iso(opened + timedelta(hours=trigger.within_hours)),
                "told": [],
            }
        )
    return fired


def open_incident(
    model: str,
    severity: str,
    summary: str,
    *,
    versions: list[int] | tuple[int, ...] = (),
    signals: dict[str, float] | None = None,
    datasets: list[str] | tuple[str, ...] = (),
    source: str = "manual",
    user: str | None = None,
    details: dict | None = None,
) -> dict:
    """Open an incident; an operator needs the `incident` permission, automatic openings
    (`user` given by the code that caught the problem) do not: a breach is never refused."""
    if severity not in SEVERITIES:
        raise LaminaError(f"unknown severity; use one of {', '.join(SEVERITIES)}", f"severity {severity!r}")
    if source not in SOURCES:
        raise LaminaError(f"unknown incident source; use one of {', '.join(SOURCES)}", f"source {source!r}")
    if not (summary or "").strip():
        raise LaminaError("an incident needs a summary (--summary)", model)
    user = user or access.require("incident")
    policy = access.ensure_policy()
    spec = responsibility(model, policy)
    opened = _now()
    signals = {k: float(v) for k, v in (signals or {}).items()}
    record = {
        "model": model,
        "versions": sorted({int(v) for v in versions}),
        "datasets": sorted(set(datasets)),
        "severity": severity,
        "summary": summary.strip()[:2000],
        "source": source,
        "state": "open",
        "opened": _iso(opened),
        "opened_by": user,
        "owner": _owner(model, policy),
        "escalation": list(spec.escalation) if spec and severity in ("high", "critical") else [],
        "signals": signals,
        "disclosures": disclosures(model, signals, opened, policy),
        "details": details or {},
        "closed": None,
        "closed_by": None,
        "retrospective": None,
    }
    disclose = [
        {"signal": d["signal"], "notify": d["notify"], "deadline": d["deadline"]}
        for d in record["disclosures"]
    ]
    details = dict(name=model, versions=record["versions"], severity=severity, source=source,
                   owner=record["owner"], signals=signals, disclose=disclose)
    # The same opening retried after a kill is the incident it opened, not a second one.
    key = journal.args_key("incident.open", user=user, model=model, severity=severity, summary=record["summary"],
                           source=source, versions=record["versions"])
    with _locked() as settled:
        done = journal.settled_by_key(settled, key)
        if done is not None:
            return {**get(done["details"]["incident"]), "already_done": True}
        with journal.operation(DOMAIN, "incident.open", user, _applied, key=key, **details) as op:
            n = 1 + max((int(p.stem) for p in root().glob("[0-9]*.json")), default=0)
            record = {"id": n, **record}
            _write(record, op)
            op.result["incident"] = n
    return record


def overdue(record: dict, at: datetime | None = None) -> list[dict]:
    """Disclosures past their deadline with contacts not yet told."""
    at = at or _now()
    late = []
    for d in record["disclosures"]:
        missing = [c for c in d["notify"] if c not in d["told"]]
        if missing and datetime.fromisoformat(d["deadline"]) < at:
            late.append({"signal": d["signal"], "deadline": d["deadline"], "not_told": missing})
    return late


def get(n: int) -> dict:
    path = _path(n)
    if not path.is_file():
        raise LaminaError("no such incident", f"incident {n}")
    return read_json(path)


def all_incidents(model: str | None = None, state: str | None = None) -> list[dict]:
    out = []
    for path in sorted(root().glob("[0-9]*.json")) if root().is_dir() else []:
        record = read_json(path)
        if (model is None or record["model"] == model) and (state is None or record["state"] == state):
            out.append({**record, "overdue": overdue(record)})
    return out


def open_for(model: str, version: int | None = None, source: str | None = None) -> list[dict]:
    return [
        r
        for r in all_incidents(model, "open")
        if (version is None or version in r["versions"]) and (source is None or r["source"] == source)
    ]


def brief(text: str, width: int) -> str:
    """A summary cut at a word, marked as cut: a guard's numbers must not read as complete."""
    return textwrap.shorten(text, width, placeholder=" …")


def check_not_frozen(model: str) -> None:
    """Refuse a promotion while `model` has an open incident (rollbacks stay allowed)."""
    frozen = open_for(model)
    if frozen:
        first = frozen[0]
        raise LaminaError(
            f"promotions of {model} are frozen while incident {first['id']} is open "
            f"({brief(first['summary'], 80)}); close it with a retrospective first",
            f"incident {first['id']}",
        )


def notified(n: int, contact: str, signal: str | None = None) -> dict:
    """Record that `contact` was told (for one signal, or every disclosure naming them)."""
    user = access.require("incident")
    get(n)  # an unknown incident is refused before the lock
    with _locked():
        record = get(n)
        hit = False
        for d in record["disclosures"]:
            if (
                contact in d["notify"]
                and (signal is None or d["signal"] == signal)
                and contact not in d["told"]
            ):
                d["told"].append(contact)
                hit = True
        if not hit:
            raise LaminaError(f"no pending disclosure names {contact!r}", f"incident {n}")
        with journal.operation(DOMAIN, "incident.notified", user, _applied, incident=n, contact=contact,
                               signal=signal) as op:
            _write(record, op)
            op.result["incident"] = n
    return record


def close(n: int, retrospective: Path) -> dict:
    """Close an incident with its retrospective; refused without one, or with disclosures untold."""
    user = access.require("incident")
    retrospective = Path(retrospective)
    if not retrospective.is_file():
        raise LaminaError("closing an incident needs a retrospective file", str(retrospective))
    data = retrospective.read_bytes()
    if not data.strip():
        raise LaminaError("the retrospective is empty", str(retrospective))
    if len(data) > MAX_RETRO_BYTES:
        raise LaminaError(f"the retrospective is over {MAX_RETRO_BYTES} bytes", str(retrospective))
    get(n)  # an unknown incident is refused before the lock
    with _locked() as settled:
        record = get(n)
        if record["state"] != "open" and _retried_close(record, user, sha256_bytes(data), settled):
            return {**record, "already_done": True}
        if record["state"] != "open":
            raise LaminaError("this incident is already closed", f"incident {n}")
        untold = [(d["signal"], c) for d in record["disclosures"] for c in d["notify"] if c not in d["told"]]
        if untold:
            signal, contact = untold[0]
            raise LaminaError(
                f"{contact!r} has not been recorded as told ({signal}); "
                f"record it with `lamina incident notified {n} {contact}` first",
                f"incident {n}",
            )
        record.update(
            state="closed",
            closed=_iso(_now()),
            closed_by=user,
            retrospective={
                "file": str(retrospective),
                "sha256": sha256_bytes(data),
                "text": data.decode("utf-8", errors="replace"),
            },
        )
        with journal.operation(DOMAIN, "incident.close", user, _applied, incident=n, name=record["model"],
                               versions=record["versions"], datasets=record["datasets"],
                               retrospective_sha256=record["retrospective"]["sha256"]) as op:
            _write(record, op)
            op.result["incident"] = n
    return record


def _retried_close(record: dict, user: str, sha: str, settled: list[dict]) -> bool:
    """Whether this close repeats the one that closed `record` and was interrupted: the same
    person, the same retrospective, and its entry written by settling, not by its command."""
    if record.get("closed_by") != user or (record.get("retrospective") or {}).get("sha256") != sha:
        return False
    just = {s["op"] for s in settled if s["action"] == "incident.close" and s["applied"]}
    return any(e["details"].get("settled") or e["details"].get("op") in just for e in audit.entries()
               if e["action"] == "incident.close" and e["details"].get("incident") == record["id"])


def record_drill(model: str, alias: str, timings: dict, user: str, op: str | None = None) -> dict:
    """Keep a drill's result beside the incidents (and in the audit log; `op`: its operation id)."""
    drills = root() / "drills"
    drills.mkdir(parents=True, exist_ok=True)
    with _locked():
        n = 1 + max((int(p.stem) for p in drills.glob("[0-9]*.json")), default=0)
        record = {"drill": n, "model": model, "alias": alias, "time": _iso(_now()), "user": user, **timings}
        write_json(drills / f"{n:06d}.json", record)
    audit.record("incident.drill", user=user, drill=n, name=model, alias=alias, **({"op": op} if op else {}),
                 **timings)
    return record
