"""Incidents through the CLI and the registry's own openings: owner and disclosures from the
policy, freeze and unfreeze, close refused without a retrospective (or with a contact untold),
overdue disclosures, a tampered version and a withdrawn subject opening incidents, drills,
`monitor check` on a degraded champion — and the audit log verifying afterwards."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from lamina.errors import LaminaError
from lamina.governance import audit, incidents
from lamina.registry import aliases, anchor, incident_links, tracking, versions
from lamina.registry.release import acting_as
from lamina.rollout import drill, live, monitor


def test_incident_lifecycle_through_the_cli(released, lamina, tmp_path):
    v1, v2, _ = released
    code, out, _ = lamina(
        "incident",
        "open",
        "tickets",
        "--severity",
        "high",
        "--summary",
        "leaks order numbers",
        "--signal",
        "pii_in_outputs=3",
        "--json",
    )
    record = json.loads(out)
    assert code == 0 and (record["id"], record["owner"], record["versions"]) == (1, "olivia", [v1])
    assert [d["notify"] for d in record["disclosures"]] == [["dpo@example.com", "acme-customer"]]
    opened = datetime.fromisoformat(record["opened"])
    assert datetime.fromisoformat(record["disclosures"][0]["deadline"]) - opened == timedelta(hours=72)
    assert incidents.overdue(record, at=opened + timedelta(hours=71)) == []
    assert incidents.overdue(record, at=opened + timedelta(hours=73))[0]["not_told"] == [
        "dpo@example.com",
        "acme-customer",
    ]

    code, _, err = lamina("promote", "tickets", str(v2), "--to", "production", user="bob")
    assert code == 2 and "promotions of tickets are frozen while incident 1 is open" in err
    code, out, _ = lamina("incident", "list")
    assert "   1  open    high      tickets" in out and "owner olivia" in out

    retro = tmp_path / "retro.md"
    code, _, err = lamina("incident", "close", "1", "--retrospective", str(retro))
    assert code == 2 and "needs a retrospective file" in err
    retro.write_text(
        "# What happened\nv1 echoed order numbers from the prompt.\n## Lessons\nadd a PII guard\n"
    )
    code, _, err = lamina("incident", "close", "1", "--retrospective", str(retro))
    assert code == 2 and "'dpo@example.com' has not been recorded as told" in err
    assert lamina("incident", "notified", "1", "dpo@example.com")[0] == 0
    assert lamina("incident", "notified", "1", "acme-customer")[0] == 0
    code, out, _ = lamina("incident", "close", "1", "--retrospective", str(retro), "--json")
    closed = json.loads(out)
    assert code == 0 and closed["state"] == "closed" and "add a PII guard" in closed["retrospective"]["text"]
    assert lamina("promote", "tickets", str(v2), "--to", "production", user="bob")[0] == 0  # unfrozen
    code, out, _ = lamina("incident", "show", "1")
    assert "told: dpo@example.com, acme-customer" in out and "retrospective" in out
    actions = [e["action"] for e in audit.entries() if e["action"].startswith("incident.")]
    assert actions == ["incident.open", "incident.notified", "incident.notified", "incident.close"]
    code, out, _ = lamina("audit", "verify")
    assert code == 0 and out.startswith("audit log intact")


def test_a_viewer_cannot_open_or_close_incidents(released, lamina):
    code, _, err = lamina("incident", "open", "tickets", "--severity", "low", "--summary", "x", user="vera")
    assert code == 2 and "lacks permission 'incident'" in err and incidents.all_incidents() == []


def test_a_tampered_version_caught_at_load_opens_one_critical_incident(released):
    _, _, v3 = released
    path = versions.local_dir(versions.get_version("tickets", v3))
    weights = path / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with acting_as("bob"), pytest.raises(LaminaError, match="signature check failed"):
        aliases.promote("tickets", v3, "production")
    with pytest.raises(LaminaError, match="signature check failed"):
        versions.resolve(f"tickets/{v3}")  # the load path: caught again
    (record,) = incidents.all_incidents("tickets")  # one, however often it is caught
    assert (record["source"], record["severity"], record["versions"]) == (
        "tampered_artifact",
        "critical",
        [v3],
    )
    assert "adapter_model.safetensors" in record["summary"]
    assert tracking.client().get_model_version("tickets", str(v3)).tags["lamina.incidents"] == "1"


def test_a_withdrawal_reaching_a_served_version_opens_an_incident_with_its_deadline(released):
    v1, v2, _ = released
    rows = [  # as lineage.for_dataset lists them
        {"version": f"tickets/{v1}", "aliases": ["production"], "dataset_version": "ds-tickets-001"},
        {"version": f"tickets/{v2}", "aliases": [], "dataset_version": "ds-tickets-001"},
    ]
    (record,) = incident_links.withdrawal_reached("subject-17", rows)
    assert (record["versions"], record["datasets"], record["source"]) == (
        [v1],
        ["ds-tickets-001"],
        "withdrawal",
    )
    (d,) = record["disclosures"]
    assert d["signal"] == "withdrawal_reached_served" and d["notify"] == ["dpo@example.com"]
    assert "subject-17" not in json.dumps(record)  # named by digest only


def test_drill_rolls_a_staging_alias_back_and_forward_and_records_it(released, lamina):
    v1, v2, _ = released
    aliases.promote("tickets", v1, "staging")  # dana deploys to staging
    aliases.promote("tickets", v2, "staging")
    code, out, _ = lamina("incident", "drill", "tickets", "--alias", "staging", "--json")
    result = json.loads(out)
    assert code == 0 and (result["from"], result["rolled_back_to"], result["restored"]) == (v2, v1, True)
    assert result["back_move_s"] > 0 and result["back_served_s"] is None  # no server given
    assert aliases.current("tickets", "staging") == v2
    with pytest.raises(LaminaError, match="non-production alias"):
        drill.drill("tickets", "production")
    assert [e["action"] for e in audit.entries()][-3:] == ["rollback", "promote", "incident.drill"]
    assert audit.verify().ok and anchor.check() == []


def test_monitor_check_opens_an_incident_for_a_degraded_champion(released, lamina):
    v1, _, _ = released
    log = live.LiveLog("replica-1")
    for i in range(30):  # the default monitor guards judge after 20 requests; a third fail
        log.request(f"tickets/{v1}", ok=i % 3 != 0, latency_s=0.05)
    code, out, _ = lamina("monitor", "check", "tickets", "--json")
    found = json.loads(out)
    assert code == 1
    (served,) = [f for f in found if f["alias"] == "production"]
    assert served["verdict"]["breached"] == ["live.error_rate <= 0.05"]
    (record,) = incidents.all_incidents("tickets")
    assert record["source"] == "monitor" and record["versions"] == [v1]
    code, out, _ = lamina("monitor", "tickets", "--json")
    (snap,) = json.loads(out)
    row = [r for r in snap["versions"] if r["version"] == f"tickets/{v1}"][0]
    assert (
        row["labels"] == ["production"]
        and row["requests"] == 30
        and row["error_rate"] == pytest.approx(1 / 3)
    )
    assert snap["open_incidents"] == [record["id"]]
    code, out, _ = lamina("monitor", "tickets", "--once")
    assert code == 0 and f"tickets/{v1}  production          30       33.3%       0.050" in out
    assert monitor.check_all("tickets")[0]["action"] is None  # not opened twice


@pytest.mark.slow  # intake with Presidio: ~16 s under load; the rule itself is tested above in the default suite
def test_lamina_data_forget_reaching_a_served_version_opens_an_incident(released, tmp_path, monkeypatch):
    """The real withdrawal: intake a source, register a version trained on it, serve it at
    production, then forget one subject — the report names the incident it opened."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data" / "intake"))
    from intake_fixtures import info, tickets, write_jsonl
    from registry_runs import make_run

    from lamina.data.intake.pipeline import run_intake
    from lamina.data.intake.sources import add_source
    from lamina.recipe import IntakeSpec
    from lamina.registry.withdrawal import forget_subject

    monkeypatch.setenv("LAMINA_USER", "admin")
    source = add_source(write_jsonl(tmp_path / "tickets.jsonl", tickets(60)), info())
    dataset = run_intake("tickets", [(source, "auto")], IntakeSpec(workers=1, eval_ratio=0.2))
    with acting_as("alice"):
        v4 = versions.register(
            make_run(tmp_path / "runs", "run-w", seed=7, dataset=dataset.version_id), "tickets"
        )
    with acting_as("bob"):
        aliases.promote("tickets", v4["version"], "production", reason="trained on the intake")
    report = forget_subject("subject-3")
    assert [m["version"] for m in report.models] == [f"tickets/{v4['version']}"]
    (record,) = incidents.all_incidents("tickets")
    assert report.incidents == [record["id"]] and record["versions"] == [v4["version"]]
    assert record["datasets"] == [dataset.version_id] and record["source"] == "withdrawal"
    assert record["disclosures"][0]["signal"] == "withdrawal_reached_served"


def test_incident_open_with_rollback_names_the_served_version_and_moves_production_back(released, lamina):
    v1, v2, _ = released
    with acting_as("bob"):
        aliases.promote("tickets", v2, "production", reason="second release")
    code, out, _ = lamina(
        "incident",
        "open",
        "tickets",
        "--severity",
        "critical",
        "--summary",
        "wrong refunds",
        "--rollback",
        "--json",
    )
    record = json.loads(out)
    assert code == 0 and record["versions"] == [v2] and record["rollback"]["to"] == v1
    assert aliases.current("tickets", "production") == v1
    assert record["disclosures"] == []  # no signal given: no trigger fires
