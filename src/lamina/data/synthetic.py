"""The bundled task, generated deterministically: support tickets → a fixed triage answer.

A ticket mentions an order number, an item, a problem and sometimes urgency, in free text;
the answer routes it: `TEAM: warehouse; ISSUE: broken; PRIORITY: high`. The issue code
follows from the customer's wording, the team from the issue, the priority from urgency cues.

The pretraining corpus pairs tickets with notes that state the same facts, so the base knows
what the wording means, as a real base would know its world. Most notes use the answer's
words but not its format (`TEAM warehouse, ISSUE broken, PRIORITY high.`); one in five uses
the format itself. The base thus knows the format, as a real base has seen most formats, but
does not answer in it unasked: after the chat prompt it writes its usual note and scores ~0
on the task, and fine-tuning has to teach it to answer in the format.

(With notes that never use the format, prompt tuning could not learn the task at all: a few
input embeddings cannot re-format the output of a 4-layer base, they can only select a
behaviour it already has. With every note in the format, the base answered a third of the
tickets right before any fine-tuning.)

(An earlier version asked for the order number and item copied verbatim. A base of a few
million parameters pretrained for a minute on CPU does not learn to copy digit strings from
context, so that task was unreachable for the embedded default; triage is learnable.)
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

from lamina.fsio import write_text

COLOURS = ["red", "blue", "green", "black", "white", "grey", "yellow", "pink"]
PRODUCTS = ["kettle", "blender", "toaster", "mug", "jacket", "backpack", "scarf", "umbrella", "lamp", "chair",
            "clock", "speaker"]
# issue code -> the team that handles it
TEAM_OF = {"broken": "warehouse", "missing": "warehouse", "wrong": "warehouse", "late": "shipping",
           "refund": "billing"}
# issue code -> ways customers describe it
ISSUES = {
    "broken": ["arrived broken", "came in pieces", "is cracked"],
    "late": ["has not arrived yet", "is two weeks late", "is still not here"],
    "wrong": ["is not what I ordered", "was the wrong item", "is a different product"],
    "refund": ["needs a refund", "should be refunded", "I want my money back for it"],
    "missing": ["is missing a part", "came without the cable", "has a piece missing"],
}
# priority -> cues; a normal ticket may carry no cue at all
URGENCY = {
    "high": ["This is urgent.", "I need it sorted today.", "Please hurry, it is urgent."],
    "normal": ["No rush.", "Whenever you can.", "", ""],
}
PRIORITIES = sorted(URGENCY)
GREETINGS = ["Hi,", "Hello,", "Hey team,", "Good morning,", "Dear support,", ""]
CLOSINGS = ["Thanks.", "Please help.", "Can you sort this out?", "Regards.", "What now?", ""]
TEMPLATES = [
    "{g} my order {o} for a {i} {p}. {u} {c}",
    "{g} order {o}: the {i} {p}. {u} {c}",
    "{g} the {i} from order {o} {p}. {u} {c}",
    "{g} I bought a {i} (order {o}) and it {p}. {u} {c}",
    "{g} about order number {o}, the {i} {p}. {u} {c}",
]
SYSTEM = "Read the support ticket and answer as TEAM: ...; ISSUE: ...; PRIORITY: ..."


@dataclass(frozen=True)
class Ticket:
    order: str
    item: str
    issue: str
    priority: str
    text: str

    @property
    def team(self) -> str:
        return TEAM_OF[self.issue]

    @property
    def answer(self) -> str:
        return answer(self.team, self.issue, self.priority)

    def note(self, answer_format: bool = False) -> str:
        """The ticket's facts in a note, in the answer's order and words, and in its format
        only when asked: predicting them after the ticket is the skill the task needs."""
        facts = self.answer if answer_format else f"TEAM {self.team}, ISSUE {self.issue}, PRIORITY {self.priority}."
        return f"Note:\n{facts}"


def answer(team: str, issue: str, priority: str) -> str:
    return f"TEAM: {team}; ISSUE: {issue}; PRIORITY: {priority}"


def parse_answer(text: str) -> dict[str, str] | None:
    """The three fields of a structured answer, or None when `text` is not one."""
    import re

    m = re.fullmatch(r"TEAM: (\S+); ISSUE: (\S+); PRIORITY: (\S+)", text.strip())
    return dict(zip(("team", "issue", "priority"), m.groups(), strict=True)) if m else None


def make_ticket(rng: random.Random) -> Ticket:
    order = str(rng.randint(1000, 9999))
    item = f"{rng.choice(COLOURS)} {rng.choice(PRODUCTS)}"
    issue = rng.choice(sorted(ISSUES))
    phrase = rng.choice(ISSUES[issue])
    priority = "high" if rng.random() < 0.4 else "normal"
    template = rng.choice(TEMPLATES)
    if "and it {p}" in template and phrase.startswith("I "):
        template = TEMPLATES[0]
    text = template.format(g=rng.choice(GREETINGS), o=order, i=item, p=phrase, u=rng.choice(URGENCY[priority]),
                           c=rng.choice(CLOSINGS))
    return Ticket(order, item, issue, priority, " ".join(text.split()))


def chat_record(t: Ticket) -> dict:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": t.text},
            {"role": "assistant", "content": t.answer},
        ]
    }


def tickets(n: int, seed: int) -> list[Ticket]:
    return list(_tickets(n, seed))


@functools.lru_cache(maxsize=16)
def _tickets(n: int, seed: int) -> tuple[Ticket, ...]:
    # The demo, its preference pairs and the tiny base's cache key ask for the same tickets.
    rng = random.Random(seed)
    return tuple(make_ticket(rng) for _ in range(n))


def task_splits(n_train: int = 1200, n_eval: int = 100, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Train and held-out chat records; no held-out ticket text appears in training."""
    train = [chat_record(t) for t in tickets(n_train, seed)]
    seen = {r["messages"][1]["content"] for r in train}
    held: list[dict] = []
    for t in tickets(n_eval * 3, seed + 10_000):
        if t.text not in seen and len(held) < n_eval:
            held.append(chat_record(t))
    return train, held


# Share of pretraining notes written in the answer's format. Measured on the tiny base (40
# held-out tickets): at 0.1 and 0.2 the base still scores 0.00, at 1.0 it scores 0.33.
ANSWER_FORMAT_NOTES = 0.2
GENERIC = [
    "The store ships orders from Monday to Friday.",
    "Customers can return an item within thirty days.",
    "A refund is paid back to the card that was used for the order.",
    "Support answers every ticket within two working days.",
    "Each order number has four digits.",
    "The warehouse checks every parcel before it leaves.",
    "An urgent ticket gets high priority; every other ticket gets normal priority.",
]


def pretraining_corpus(n_docs: int = 6000, seed: int = 1) -> list[str]:
    """Tickets each followed by a note stating their facts, and store facts.

    Tickets here come from their own seed, so the held-out tickets are not in the corpus.
    """
    rng = random.Random(seed + 20_000)
    docs = []
    for t in tickets(n_docs, seed + 20_000):
        docs.append(f"{t.text}\n{t.note(answer_format=rng.random() < ANSWER_FORMAT_NOTES)}")
        if rng.random() < 0.2:
            docs.append(rng.choice(GENERIC))
    return docs


def write_jsonl(path, records: list[dict]) -> None:
    import json

    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
