"""`lamina monitor`: per-version live figures beside each alias and rollout, and `monitor check`,
which judges every served version's guards — rolling back a breaking challenger, opening an
incident for a degraded champion (held to its recipe's absolute `rollout.monitor_guards`:
outside a rollout a version has nothing to be compared with).
"""

from __future__ import annotations

import time

from lamina.governance import access, incidents
from lamina.recipe import RegistrySpec, RolloutSpec
from lamina.registry import aliases, incident_links, tracking
from lamina.rollout import control, guards, live, record

COLUMNS = (
    ("requests", "req", "{:.0f}"),
    ("error_rate", "err", "{:.1%}"),
    ("latency_p95_s", "p95 s", "{:.3f}"),
    ("guard_trips", "trips", "{:.0f}"),
    ("pii_rate", "pii", "{:.1%}"),
    ("refusal_rate", "refuse", "{:.1%}"),
    ("feedback_score", "rating", "{:.2f}"),
    ("agreement_rate", "agree", "{:.1%}"),
    ("prompt_tokens_p50", "prompt p50", "{:.0f}"),
    ("prompt_drift", "drift", "{:.2f}"),
)


def models(name: str | None) -> list[str]:
    if name:
        return [name]
    with tracking.server_errors("listing registered models"):
        return sorted(m.name for m in tracking.client().search_registered_models())


def snapshot(name: str | None = None, window_s: float | None = None, at: float | None = None) -> list[dict]:
    """Per model: aliases, rollouts and each version's statistics over the window."""
    window_s = window_s or RolloutSpec().window_s
    at = at if at is not None else time.time()
    out = []
    for model in models(name):
        at_alias = {a: aliases.current(model, a) for a in RegistrySpec().aliases}
        rows = live.window(model, window_s, at)
        rollouts = [s for s in record.all_states(model) if s["state"] == record.ACTIVE]
        labels: dict[str, list[str]] = {}
        for a, v in at_alias.items():
            if v is not None:
                labels.setdefault(f"{model}/{v}", []).append(a)
        for s in rollouts:
            labels.setdefault(f"{model}/{s['challenger']}", []).append(
                f"{s['mode']} {s['share']:g}% of {s['alias']}"
            )
        versions = sorted(set(rows) | set(labels), key=lambda k: int(k.rpartition("/")[2]))
        out.append(
            {
                "model": model,
                "window_s": window_s,
                "aliases": at_alias,
                "rollouts": rollouts,
                "versions": [
                    {"version": k, "labels": labels.get(k, []), **(rows.get(k) or {})} for k in versions
                ],
                "open_incidents": [i["id"] for i in incidents.all_incidents(model, "open")],
            }
        )
    return out


def render(snap: list[dict]) -> str:
    lines = []
    for m in snap:
        lines.append(
            f"{m['model']}  (last {m['window_s']:g} s; open incidents: "
            f"{', '.join(map(str, m['open_incidents'])) or 'none'})"
        )
        wv = max([len("version")] + [len(v["version"]) for v in m["versions"]])
        wl = max([len("serving")] + [len(", ".join(v["labels"])) for v in m["versions"]])
        lines.append(
            "  "
            + "  ".join([f"{'version':<{wv}}", f"{'serving':<{wl}}"] + [f"{h:>10}" for _, h, _ in COLUMNS])
        )
        for v in m["versions"]:
            cells = [f"{v['version']:<{wv}}", f"{', '.join(v['labels']) or '-':<{wl}}"]
            for key, _, fmt in COLUMNS:
                value = v.get(key)
                cells.append(f"{fmt.format(value) if value is not None else '-':>10}")
            lines.append("  " + "  ".join(cells))
    return "\n".join(lines)


def check_all(name: str | None = None, at: float | None = None) -> list[dict]:
    """Judge every alias of every model once; returns what was found and done."""
    access.require("read")
    found = []
    for model in models(name):
        for alias in RegistrySpec().aliases:
            if record.active(model, alias):
                result = control.check(model, alias, at)
                found.append(
                    {
                        "model": model,
                        "alias": alias,
                        "kind": "rollout",
                        "verdict": result["verdict"],
                        "action": result["action"],
                    }
                )
                continue
            number = aliases.current(model, alias)
            if number is not None:
                found.append(_check_served(model, alias, number, at))
    return found


def _check_served(model: str, alias: str, number: int, at: float | None) -> dict:
    spec = control.rollout_spec(model, number)
    row = live.window(model, spec.window_s, at).get(f"{model}/{number}") or {}
    verdict = guards.judge(guards.parse_guards(spec.monitor_guards), row, None, spec.min_requests)
    out = {
        "model": model,
        "alias": alias,
        "kind": "served",
        "version": number,
        "verdict": verdict.as_dict(),
        "action": None,
    }
    if verdict.state == "breach" and not incidents.open_for(model, number, "monitor"):
        first = verdict.breached[0]
        incident = incident_links.open_and_link(
            model,
            "high",
            f"{model}/{number} at {alias} breaks {first.expr} ({first.value:.4g} vs {first.threshold:.4g})",
            versions=[number],
            signals={"guard_breach": float(len(verdict.breached))},
            source="monitor",
            user=access.acting_user(),
            details={"verdict": verdict.as_dict()},
        )
        out["action"] = {"incident": incident["id"]}
    return out
