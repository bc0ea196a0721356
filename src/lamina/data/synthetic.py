"""The bundled task, generated deterministically: support tickets → a fixed structured answer.

A ticket mentions an order number, an item and a problem in free text; the answer is
`ORDER: 4821; ITEM: blue kettle; ISSUE: broken`. Learning it needs two skills: copying facts
from context (which the tiny base learns in pretraining, as a real base would have) and the
new output format with its issue codes (which fine-tuning teaches).

The pretraining corpus pairs tickets with free-text notes that restate their facts, so the
base learns to copy — never the structured format itself, so the base scores ~0 on the task.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from lamina.fsio import write_text

COLOURS = ["red", "blue", "green", "black", "white", "grey", "yellow", "pink"]
PRODUCTS = [
    "kettle",
    "lamp",
    "jacket",
    "blender",
    "backpack",
    "toaster",
    "mug",
    "scarf",
    "chair",
    "clock",
    "speaker",
    "umbrella",
]
# issue code -> ways customers describe it
ISSUES = {
    "broken": ["arrived broken", "came in pieces", "is cracked"],
    "late": ["has not arrived yet", "is two weeks late", "is still not here"],
    "wrong_item": ["is not what I ordered", "was the wrong item", "is a different product"],
    "refund": ["needs a refund", "should be refunded", "I want my money back for it"],
    "missing_part": ["is missing a part", "came without the cable", "has a piece missing"],
}
GREETINGS = ["Hi,", "Hello,", "Hey team,", "Good morning,", "Dear support,", ""]
CLOSINGS = ["Thanks.", "Please help.", "Can you sort this out?", "Regards.", "What now?", ""]
TEMPLATES = [
    "{g} my order {o} for a {i} {p}. {c}",
    "{g} order {o}: the {i} {p}. {c}",
    "{g} the {i} from order {o} {p}. {c}",
    "{g} I bought a {i} (order {o}) and it {p}. {c}",
    "{g} about order number {o}, the {i} {p}. {c}",
]
SYSTEM = "Read the support ticket and answer as ORDER: ...; ITEM: ...; ISSUE: ..."


@dataclass(frozen=True)
class Ticket:
    order: str
    item: str
    issue: str
    text: str

    @property
    def answer(self) -> str:
        return f"ORDER: {self.order}; ITEM: {self.item}; ISSUE: {self.issue}"

    @property
    def note(self) -> str:
        return f"Note: order {self.order}, {self.item}, {self.issue.replace('_', ' ')}."


def make_ticket(rng: random.Random) -> Ticket:
    order = str(rng.randint(1000, 9999))
    item = f"{rng.choice(COLOURS)} {rng.choice(PRODUCTS)}"
    issue = rng.choice(sorted(ISSUES))
    phrase = rng.choice(ISSUES[issue])
    template = rng.choice(TEMPLATES)
    if "and it {p}" in template and phrase.startswith("I "):
        template = TEMPLATES[0]
    text = template.format(g=rng.choice(GREETINGS), o=order, i=item, p=phrase, c=rng.choice(CLOSINGS))
    return Ticket(order, item, issue, " ".join(text.split()))


def chat_record(t: Ticket) -> dict:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": t.text},
            {"role": "assistant", "content": t.answer},
        ]
    }


def tickets(n: int, seed: int) -> list[Ticket]:
    rng = random.Random(seed)
    return [make_ticket(rng) for _ in range(n)]


def task_splits(n_train: int = 1200, n_eval: int = 100, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Train and held-out chat records; held-out orders never appear in training."""
    train = [chat_record(t) for t in tickets(n_train, seed)]
    seen = {r["messages"][2]["content"] for r in train}
    held: list[dict] = []
    for t in tickets(n_eval * 3, seed + 10_000):
        rec = chat_record(t)
        if rec["messages"][2]["content"] not in seen and len(held) < n_eval:
            held.append(rec)
    return train, held


GENERIC = [
    "The store ships orders from Monday to Friday.",
    "Customers can return an item within thirty days.",
    "A refund is paid back to the card that was used for the order.",
    "Support answers every ticket within two working days.",
    "Each order number has four digits.",
    "The warehouse checks every parcel before it leaves.",
]


def copy_drill(rng: random.Random) -> str:
    """A line of random words and digits, then the same line again: pure practice at
    copying from context, the skill small models are slowest to pick up."""
    words = COLOURS + PRODUCTS + [str(d) for d in range(10)]
    line = " ".join(rng.choice(words) for _ in range(rng.randint(4, 9)))
    return f"Code: {line}.\nAgain: {line}."


def pretraining_corpus(n_docs: int = 6000, seed: int = 1) -> list[str]:
    """Tickets each followed by a note restating their facts, copy drills, store facts.

    Tickets here come from their own seed, so the held-out tickets are not in the corpus.
    """
    rng = random.Random(seed + 20_000)
    docs = []
    for t in tickets(n_docs, seed + 20_000):
        docs.append(f"{t.text}\n{t.note}")
        docs.append(copy_drill(rng))
        if rng.random() < 0.2:
            docs.append(rng.choice(GENERIC))
    return docs


def write_jsonl(path, records: list[dict]) -> None:
    import json

    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
