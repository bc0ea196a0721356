"""Text for people: a model's history with its rollout steps, a rollout's status, an incident."""

from __future__ import annotations

from lamina.governance import incidents
from lamina.registry import aliases, release
from lamina.rollout import record


def history(name: str) -> list[dict]:
    """Registrations, alias moves and rollout events of `name`, oldest first."""
    return sorted(aliases.history(name) + record.events(name), key=lambda e: e["time"])


def render_history(events: list[dict]) -> str:
    lines = []
    for e in events:
        if not e["op"].startswith("rollout."):
            lines.append(release.render_history([e]))
            continue
        what = f"v{e['challenger']} {e['mode']}" + (f" {e['share']:g}%" if e["mode"] == "canary" else "")
        line = f"{e['time']}  {e['op']:<16}  {e['alias']}: {what} beside v{e['champion']} by {e['user']}"
        lines.append(line + (f" ({e['reason']})" if e.get("reason") else ""))
    return "\n".join(lines)


def _fmt(x) -> str:
    if x is None:
        return "-"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def render_status(items: list[dict]) -> str:
    if not items:
        return "no rollout recorded"
    lines = []
    for it in items:
        r, v = it["rollout"], it["verdict"]
        share = f"{r['share']:g}%" if r["mode"] == "canary" else "shadow copy"
        lines.append(
            f"{r['alias']}: rollout {r['id']} {r['state']} — v{r['challenger']} ({share}) beside v{r['champion']}; "
            f"alias at v{it['alias_at']}; started {r['started']} by {r['started_by']}"
        )
        lines.append(
            f"  window {r['window_s']:g} s, verdict {v['state']} ({v['requests']}/{v['min_requests']} requests)"
        )
        keys = (
            "requests",
            "error_rate",
            "latency_p95_s",
            "guard_trip_rate",
            "refusal_rate",
            "feedback_score",
            "agreement_rate",
        )
        lines.append("  " + f"{'':<12}" + "".join(f"{k:>16}" for k in keys))
        for label, row in (("champion", it["champion"]), ("challenger", it["challenger"])):
            lines.append("  " + f"{label:<12}" + "".join(f"{_fmt(row.get(k)):>16}" for k in keys))
        for c in v["checks"]:
            mark = (
                "ok"
                if c["passed"]
                else ("BROKEN" if c["value"] is not None and c["threshold"] is not None else "n/a")
            )
            lines.append(
                f"  [{mark}] {c['expr']}: {_fmt(c['value'])} vs {_fmt(c['threshold'])} {c['note']}".rstrip()
            )
    return "\n".join(lines)


def render_incident(r: dict) -> str:
    lines = [
        f"incident {r['id']} [{r['state']}] {r['severity']} — {r['model']} versions {r['versions'] or '-'}",
        f"  {r['summary']}",
        f"  opened {r['opened']} by {r['opened_by']} ({r['source']}); owner {r['owner']}"
        + (f"; escalate to {', '.join(r['escalation'])}" if r["escalation"] else ""),
    ]
    if r.get("datasets"):
        lines.append("  datasets (what the versions trained on): " + ", ".join(r["datasets"]))
    if r["signals"]:
        lines.append("  signals: " + ", ".join(f"{k}={v:g}" for k, v in r["signals"].items()))
    for d in r["disclosures"]:
        told = ", ".join(d["told"]) or "nobody yet"
        lines.append(
            f"  disclose ({d['signal']}) to {', '.join(d['notify'])} by {d['deadline']}; told: {told}"
        )
    for late in r.get("overdue") or []:
        lines.append(
            f"  OVERDUE: {late['signal']} was due {late['deadline']}; not told: {', '.join(late['not_told'])}"
        )
    if r["retrospective"]:
        lines.append(
            f"  closed {r['closed']} by {r['closed_by']}; retrospective {r['retrospective']['file']} "
            f"(sha256 {r['retrospective']['sha256'][:12]})"
        )
    return "\n".join(lines)


def render_incidents(records: list[dict]) -> str:
    if not records:
        return "no incidents"
    lines = []
    for r in records:
        late = " OVERDUE" if r.get("overdue") else ""
        lines.append(
            f"{r['id']:>4}  {r['state']:<6}  {r['severity']:<8}  {r['model']:<20}  {r['opened']}  "
            f"owner {r['owner']}{late}  {incidents.brief(r['summary'], 60)}"
        )
    return "\n".join(lines)
