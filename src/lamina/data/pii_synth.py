"""A labelled synthetic PII set: texts with known spans, to measure detection honestly.

Every value is fake but valid where a real detector checks validity (card numbers pass Luhn,
IBANs carry valid mod-97 check digits, SSNs avoid the ranges the SSA never issues), so a miss
is the detector's miss, not a malformed value. A quarter of the values are written the way
people really type them (no separators, lower case, "at ... dot", IPv6). Texts mix PII with look-alikes
(order numbers, prices, dates, versions) so precision means something.

`plant_pii` puts the same kind of sentences into existing chat records (the demo's data).
"""

from __future__ import annotations

import copy
import random
import string
from dataclasses import dataclass, field
from typing import Any

ENTITIES = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "ADDRESS",
    "IP_ADDRESS",
)

FIRST = "Maria James Aisha Chen Olivia Mateo Priya Lukas Fatima Noah Sofia Kwame Elena Hiroshi Grace Omar Ingrid Diego Zoe Arjun".split()
LAST = "Garcia Smith Okafor Wang Müller Rossi Patel Novak Haddad Johnson Silva Mensah Petrov Tanaka O'Brien Khan Larsen Alvarez Dubois Nguyen".split()
STREETS = "Maple Oak Baker Harbor Mill Cedar Sunset Church Highland Willow River Station".split()
SUFFIXES = ["Street", "St.", "Avenue", "Ave", "Road", "Rd", "Lane", "Drive", "Blvd", "Court"]
CITIES = [
    "Springfield, IL 62704",
    "Austin, TX 78701",
    "Portland, OR 97205",
    "Leeds",
    "Denver, CO 80202",
    "Boston",
]
DOMAINS = ["example.com", "mail.example.org", "example.net", "inbox.example.co.uk"]


def _luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def fake_card(rng: random.Random) -> str:
    prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("37", 15), ("6011", 16)])
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    number = body + _luhn_digit(body)
    sep = rng.choice([" ", "-", ""])
    groups = [number[i : i + 4] for i in range(0, len(number), 4)]
    return sep.join(groups)


def _iban_check(country: str, bban: str) -> str:
    moved = bban + country + "00"
    numeric = "".join(str(int(c, 36)) for c in moved)
    return f"{98 - int(numeric) % 97:02d}"


# BBAN shapes (n: digit, a: upper-case letter, c: either) of countries people write in;
# Spain's BBAN carries its own check digits (computed below), like the real ones.
IBAN_BBAN = {
    "GB": "aaaannnnnnnnnnnnnn", "DE": "nnnnnnnnnnnnnnnnnn", "NL": "aaaannnnnnnnnn",
    "ES": "nnnnnnnnnnnnnnnnnnnn", "FR": "nnnnnnnnnnccccccccccnnn", "IT": "annnnnnnnnnnnnnnnnnnnnn",
    "PL": "nnnnnnnnnnnnnnnnnnnnnnnn", "CH": "nnnnncccccccccccc", "AT": "nnnnnnnnnnnnnnnn",
    "PT": "nnnnnnnnnnnnnnnnnnnnn", "IE": "aaaannnnnnnnnnnnnn", "SE": "nnnnnnnnnnnnnnnnnnnn",
}


def _bban(country: str, rng: random.Random) -> str:
    pools = {"n": string.digits, "a": string.ascii_uppercase, "c": string.digits + string.ascii_uppercase}
    bban = "".join(rng.choice(pools[k]) for k in IBAN_BBAN[country])
    if country == "ES":
        from stdnum.es import ccc

        bban = bban[:8] + ccc.calc_check_digits(bban) + bban[10:]
    return bban


def fake_iban(rng: random.Random) -> str:
    country = rng.choice(sorted(IBAN_BBAN))
    bban = _bban(country, rng)
    iban = country + _iban_check(country, bban) + bban
    if rng.random() < 0.5:
        return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    return iban


def fake_ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 666) if a != 666])
    sep = rng.choice(["-", "-", " "])
    return f"{area:03d}{sep}{rng.randint(1, 99):02d}{sep}{rng.randint(1, 9999):04d}"


def fake_phone(rng: random.Random) -> str:
    n3, n4 = f"{rng.randint(200, 989)}", f"{rng.randint(0, 9999):04d}"
    area = f"{rng.choice([212, 312, 415, 617, 646, 720, 503])}"
    return rng.choice(
        [
            f"({area}) {n3}-{n4}",
            f"{area}-{n3}-{n4}",
            f"+1 {area} {n3} {n4}",
            f"+44 20 7{rng.randint(100, 999)} {rng.randint(1000, 9999)}",
            f"+49 30 {rng.randint(1000000, 9999999)}",
        ]
    )


def fake_name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def fake_email(rng: random.Random) -> str:
    user = rng.choice(FIRST).lower() + rng.choice([".", "_", ""]) + rng.choice(LAST).lower().replace("'", "")
    user = user.replace("ü", "u") + (str(rng.randint(1, 99)) if rng.random() < 0.4 else "")
    return f"{user}@{rng.choice(DOMAINS)}"


def fake_address(rng: random.Random) -> str:
    return f"{rng.randint(1, 9899)} {rng.choice(STREETS)} {rng.choice(SUFFIXES)}, {rng.choice(CITIES)}"


def fake_ip(rng: random.Random) -> str:
    return ".".join(str(rng.randint(1, 254)) for _ in range(4))


def _hard(entity: str, value: str, rng: random.Random) -> str:
    """Forms people really type that defeat pattern recognizers: the set would flatter a
    detector if every value were textbook-formatted."""
    if entity == "EMAIL_ADDRESS":
        user, domain = value.split("@")
        return f"{user} at {domain.replace('.', ' dot ')}"
    if entity == "PHONE_NUMBER":
        digits = "".join(c for c in value if c.isdigit())[-10:]
        return rng.choice([digits, f"{digits[:3]}.{digits[3:6]}.{digits[6:]}"])
    if entity in ("US_SSN", "CREDIT_CARD"):
        # Bare digits: a nine-digit SSN is only recognisable beside the word that names it,
        # and every US_SSN frame names it.
        return "".join(c for c in value if c.isdigit())
    if entity in ("IBAN_CODE", "PERSON", "ADDRESS"):
        return value.lower()
    if entity == "IP_ADDRESS":
        return ":".join(f"{rng.randint(0, 0xFFFF):x}" for _ in range(8))
    return value


HARD_SHARE = 0.25

FAKERS = {
    "PERSON": fake_name,
    "EMAIL_ADDRESS": fake_email,
    "PHONE_NUMBER": fake_phone,
    "CREDIT_CARD": fake_card,
    "IBAN_CODE": fake_iban,
    "US_SSN": fake_ssn,
    "ADDRESS": fake_address,
    "IP_ADDRESS": fake_ip,
}


def fake(entity: str, rng: random.Random) -> str:
    value = FAKERS[entity](rng)
    return _hard(entity, value, rng) if rng.random() < HARD_SHARE else value


# Sentence frames; {X} marks where a value of entity X goes.
FRAMES = {
    "PERSON": [
        "My name is {PERSON}.",
        "This is {PERSON} writing again.",
        "Please ask {PERSON} to call me back.",
    ],
    "EMAIL_ADDRESS": [
        "You can reach me at {EMAIL_ADDRESS}.",
        "Email: {EMAIL_ADDRESS}",
        "cc {EMAIL_ADDRESS} please",
    ],
    "PHONE_NUMBER": [
        "Call me on {PHONE_NUMBER} after 5pm.",
        "Phone: {PHONE_NUMBER}",
        "my mobile is {PHONE_NUMBER}",
    ],
    "CREDIT_CARD": ["I paid with card {CREDIT_CARD}.", "Card number {CREDIT_CARD} was charged twice."],
    # Frames that end the value with a word of four or more letters (what made Presidio's
    # case-insensitive pattern run on into the word), and ones that do not.
    "IBAN_CODE": [
        "Refund to IBAN {IBAN_CODE} please.",
        "My account: {IBAN_CODE}",
        "send it to {IBAN_CODE} thanks",
        "Pay {IBAN_CODE} before Friday.",
    ],
    "US_SSN": ["SSN {US_SSN} for the tax form.", "my social security number is {US_SSN}", "SSN: {US_SSN}"],
    "ADDRESS": ["Ship it to {ADDRESS}.", "I live at {ADDRESS}", "Return address: {ADDRESS}."],
    "IP_ADDRESS": ["The login came from {IP_ADDRESS}.", "server ip {IP_ADDRESS}"],
}

# Look-alikes that are not PII: a detector that flags these loses precision.
DISTRACTORS = [
    lambda r: f"Order {r.randint(10000, 99999)} arrived on {r.randint(1, 28)}/{r.randint(1, 12)}/2026.",
    lambda r: f"It cost ${r.randint(10, 999)}.{r.randint(0, 99):02d} including tax.",
    lambda r: f"Firmware version {r.randint(1, 9)}.{r.randint(0, 20)}.{r.randint(0, 9)} is installed.",
    lambda r: f"Tracking code TRK{r.randint(100000, 999999)} shows no movement.",
    lambda r: f"Item SKU-{r.randint(1000, 9999)}-{r.randint(10, 99)} was the wrong colour.",
    lambda r: "The kettle stopped working after two days.",
    # SSN-shaped numbers that are not SSNs (area 9xx is never issued; no SSN context),
    # and version strings shaped like private IP addresses.
    lambda r: f"Case 9{r.randint(10, 99)}-{r.randint(10, 99)}-{r.randint(1000, 9999)} was reopened.",
    lambda r: f"Invoice {r.randint(100000000, 899999999)} is attached.",
    lambda r: f"Updated to version 10.{r.randint(0, 9)}.{r.randint(0, 9)}.{r.randint(1, 99)} yesterday.",
    lambda r: f"firmware 192.168.{r.randint(0, 9)}.{r.randint(1, 40)} fixed the pairing bug",
    lambda r: "Thanks for the quick help last time!",
]


@dataclass
class LabelledText:
    text: str
    spans: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, entity)

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "spans": [list(s) for s in self.spans]}


def _compose(rng: random.Random, entities: list[str], n_distractors: int) -> LabelledText:
    pieces: list[tuple[str, str | None, str | None]] = []  # (frame, entity, value)
    for ent in entities:
        pieces.append((rng.choice(FRAMES[ent]), ent, fake(ent, rng)))
    for _ in range(n_distractors):
        pieces.append((rng.choice(DISTRACTORS)(rng), None, None))
    rng.shuffle(pieces)
    out = LabelledText("")
    for frame, ent, value in pieces:
        if out.text:
            out.text += " "
        if ent is None:
            out.text += frame
            continue
        before, after = frame.split("{" + ent + "}")
        start = len(out.text) + len(before)
        out.text += before + value + after
        out.spans.append((start, start + len(value), ent))
    return out


def generate(n: int, seed: int = 0, entities: tuple[str, ...] = ENTITIES) -> list[LabelledText]:
    """`n` labelled texts; about one in six carries no PII at all."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = 0 if rng.random() < 1 / 6 else rng.randint(1, 3)
        out.append(_compose(rng, rng.sample(list(entities), k), rng.randint(1, 3)))
    return out


def plant_pii(
    records: list[dict[str, Any]], rate: float = 0.3, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Append PII sentences to the first user turn of a `rate` share of chat records.

    Returns (new records, labels); a label is {record, message, start, end, entity} with
    offsets into that message's new content. The input records are not modified.
    """
    rng = random.Random(seed)
    out, labels = [], []
    for i, rec in enumerate(records):
        rec = copy.deepcopy(rec)
        out.append(rec)
        users = [j for j, m in enumerate(rec.get("messages", [])) if m["role"] == "user"]
        if not users or rng.random() >= rate:
            continue
        j = users[0]
        planted = _compose(rng, rng.sample(list(ENTITIES), rng.randint(1, 2)), 0)
        offset = len(rec["messages"][j]["content"]) + 1
        rec["messages"][j]["content"] += " " + planted.text
        for s, e, ent in planted.spans:
            labels.append({"record": i, "message": j, "start": s + offset, "end": e + offset, "entity": ent})
    return out, labels
