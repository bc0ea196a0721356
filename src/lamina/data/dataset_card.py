"""Dataset cards in the Hugging Face format: a YAML header, then sections in Markdown.

Written from a version's manifest, so every figure on the card is the one intake counted.
"""

from __future__ import annotations

from typing import Any

import yaml

# Licence ids the Hub's card metadata knows; anything else is `other` plus `license_name`.
HF_LICENCES = {
    "apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0",
    "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-nd-4.0", "odc-by", "odbl", "pddl", "gpl-3.0", "lgpl-3.0",
    "openrail", "unlicense",
}  # fmt: skip


def _size_category(n: int) -> str:
    for limit, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if n < limit:
            return label
    return "n>1M"


def _header(m: dict[str, Any]) -> str:
    licences = sorted({s["licence"] for s in m["sources"]})
    single = licences[0].lower() if len(licences) == 1 else None
    head = {
        "pretty_name": m["name"],
        "license": single if single in HF_LICENCES else "other",
        "language": ["en"],
        "size_categories": [_size_category(m["counts"]["train"] + m["counts"]["eval"])],
        "task_categories": ["text-generation"],
        "tags": ["lamina", "pii-masked", m["kind"] or "sft"],
        "configs": [
            {
                "config_name": "default",
                "data_files": [
                    {"split": "train", "path": "train.jsonl"},
                    {"split": "eval", "path": "eval.jsonl"},
                ],
            }
        ],
    }
    if head["license"] == "other":
        head["license_name"] = ", ".join(licences)
    return "---\n" + yaml.safe_dump(head, sort_keys=False) + "---\n"


def _cell(v: Any) -> str:
    return "—" if v in (None, "") else str(v).replace("|", "\\|").replace("\n", " ")


def _provenance(m: dict[str, Any]) -> list[str]:
    rows = [
        "| source | revision | records | origin | licence | lawful basis | consent ref | personal data | retain until | role |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in m["sources"]:
        cells = (s["name"], s["revision"], s["records"], s["origin"], s["licence"], s["lawful_basis"])
        cells += (s["consent_ref"], "yes" if s["personal_data"] else "no", s["retain_until"], s["role"])
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return rows


def _steps(m: dict[str, Any]) -> list[str]:
    st = m["steps"]
    pii, dd, sp, ct = st["pii"], st["dedup"], st["split"], st["contamination"]
    return [
        "| step | parameters | result |",
        "|---|---|---|",
        f"| read | — | {st['read']['records']} records |",
        f"| normalise | Unicode {st['normalize']['unicode_form']}, whitespace | {st['normalize']['records_changed']} records changed |",
        f"| PII | operator `{pii['operator']}`, threshold {pii['score_threshold']}, NER `{pii['ner']}` | "
        f"{sum(pii['found'].values())} spans in {pii['records_with_pii']} records |",
        f"| dedup | MinHash LSH, Jaccard ≥ {dd['threshold']}, {dd['num_perm']} perms, {dd['shingle']}-word shingles | "
        f"{dd['exact_removed']} exact and {dd['near_removed']} near duplicates removed |",
        f"| split | hash of record, eval ratio {sp['eval_ratio']} | {sp['train']} train, {sp['eval']} eval |",
        f"| contamination | {ct['ngram']}-gram overlap ≥ {ct['threshold']} vs eval split + {len(ct['eval_files'])} files | "
        f"{ct['flagged']} flagged, {ct['removed']} removed |",
        f"| **final** | | **{m['counts']['train']} train, {m['counts']['eval']} eval** |",
    ]


def _pii(m: dict[str, Any]) -> list[str]:
    pii = m["steps"]["pii"]
    if not pii["enabled"]:
        return ["PII masking was **disabled** for this version."]
    action = {
        "placeholder": "replaced by a typed placeholder such as `<EMAIL_ADDRESS>`",
        "mask": "masked with `*`",
    }
    done = action.get(
        pii["operator"], "replaced by a keyed pseudonym (HMAC-SHA256, stable within the workspace)"
    )
    uncovered = set(pii.get("uncovered", []))
    rows = ["| entity | spans found | action |", "|---|---|---|"]
    for entity in sorted(set(pii["entities"]) | set(pii["found"])):
        action = "**not covered**: no recognizer ran (no NER model installed)" if entity in uncovered else done
        rows.append(f"| {entity} | {pii['found'].get(entity, 0)} | {action} |")
    if uncovered:
        rows += ["", f"**Entities not covered:** {', '.join(sorted(uncovered))} — values of these types are "
                 "still in the records as written."]
    return rows


def render_card(m: dict[str, Any]) -> str:
    lines = [
        _header(m),
        f"# Dataset card: {m['name']}",
        "",
        f"Version `{m['id']}` (sha256 of the canonical records), made by {m['created_by']} at {m['created_at']}"
        + (f", replacing `{m['parent']}`." if m.get("parent") else "."),
        "",
        "## Provenance",
        "",
        *_provenance(m),
        "",
        "## Intake",
        "",
        *_steps(m),
        "",
        "## Personal data",
        "",
        *_pii(m),
        "",
        "Subject identifiers are not part of the records; the catalog keeps keyed hashes of them so that a "
        "withdrawal (`lamina data forget`) can find every version and run they reached. The raw, unmasked "
        "snapshot of each source is kept encrypted at rest (AES-256-GCM) and is never used for training.",
        "",
        "## Intended use",
        "",
        "Fine-tuning within the purposes declared for its sources: "
        + "; ".join(sorted({s["purpose"] for s in m["sources"]}))
        + ". Other uses need a fresh check of each source's licence and lawful basis.",
        "",
        "## Known limitations",
        "",
        "- Automated PII detection misses things. Pattern recognizers find well-formed emails, phone numbers, "
        "card numbers, IBANs, SSNs, IP addresses and street addresses; names and places are found only when a "
        "spaCy NER model is installed"
        + (" (it was configured here)." if pii_ner(m) else " (NER was not available for this version)."),
        "  Measure with `lamina data pii-report` before trusting the masking.",
        "- Near-duplicate removal and the contamination check work on word n-grams: paraphrases pass both.",
        "- Counts above are as of this version; later withdrawals produce new versions, never edits of this one.",
        "",
    ]
    return "\n".join(lines)


def pii_ner(m: dict[str, Any]) -> bool:
    pii = m["steps"]["pii"]
    return pii["ner"] != "off" and bool({"PERSON", "LOCATION"} & set(pii.get("active", [])))
