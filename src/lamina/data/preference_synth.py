"""Bundled preference pairs for the ticket task, generated deterministically.

The chosen reply is the correct structured answer; the rejected one is a plausible wrong
answer that gets exactly one field wrong in the way a weak model does: a digit of the order
number changed or two digits swapped, the right product in the wrong colour, or a related
but wrong issue code. Held-out pairs come from the held-out tickets of
`lamina.data.synthetic.task_splits`, so their orders never appear in training.
"""

from __future__ import annotations

import random
import re

from lamina.data.synthetic import COLOURS, ISSUES, SYSTEM, task_splits

# Issue codes customers' wording is most often confused with.
NEAR_ISSUES = {
    "broken": ["missing_part", "wrong_item"],
    "late": ["missing_part", "refund"],
    "wrong_item": ["broken", "refund"],
    "refund": ["late", "wrong_item"],
    "missing_part": ["broken", "late"],
}


def _fields(answer: str) -> dict[str, str]:
    parts = dict(p.split(": ", 1) for p in answer.split("; "))
    return {"order": parts["ORDER"], "item": parts["ITEM"], "issue": parts["ISSUE"]}


def _answer(f: dict[str, str]) -> str:
    return f"ORDER: {f['order']}; ITEM: {f['item']}; ISSUE: {f['issue']}"


def wrong_order(order: str, rng: random.Random) -> str:
    digits = list(order)
    i = rng.randrange(len(digits))
    if rng.random() < 0.5 and len(set(digits)) > 1:
        j = rng.choice([k for k in range(len(digits)) if digits[k] != digits[i]])
        digits[i], digits[j] = digits[j], digits[i]
    else:
        choices = [d for d in "0123456789" if d != digits[i] and not (i == 0 and d == "0")]
        digits[i] = rng.choice(choices)
    return "".join(digits)


def corrupt(answer: str, rng: random.Random) -> str:
    """A plausible wrong answer: one field changed."""
    f = _fields(answer)
    which = rng.choice(["order", "item", "issue"])
    if which == "order":
        f["order"] = wrong_order(f["order"], rng)
    elif which == "item":
        colour, product = f["item"].split(" ", 1)
        f["item"] = f"{rng.choice([c for c in COLOURS if c != colour])} {product}"
    else:
        f["issue"] = rng.choice(NEAR_ISSUES.get(f["issue"], sorted(set(ISSUES) - {f["issue"]})))
    return _answer(f)


def to_pair(record: dict, rng: random.Random) -> dict:
    messages = record["messages"]
    chosen = messages[-1]["content"]
    return {"prompt": messages[:-1], "chosen": chosen, "rejected": corrupt(chosen, rng)}


def preference_splits(n_train: int = 600, n_eval: int = 100, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, held-out) preference records in the `preference` data format."""
    train, held = task_splits(n_train=max(n_train, 1), n_eval=n_eval, seed=seed)
    rng = random.Random(seed + 30_000)
    return [to_pair(r, rng) for r in train[:n_train]], [to_pair(r, rng) for r in held]


def ticket_facts(ticket: str) -> dict[str, str | None]:
    """Order number, item and issue code a ticket states (None where it states none)."""
    from lamina.data.synthetic import PRODUCTS

    order = re.search(r"\b(\d{4})\b", ticket)
    items = [f"{c} {p}" for c in COLOURS for p in PRODUCTS if f"{c} {p}" in ticket]
    issues = [code for code, phrases in ISSUES.items() if any(ph in ticket for ph in phrases)]
    return {
        "order": order.group(1) if order else None,
        "item": items[0] if items else None,
        "issue": issues[0] if len(issues) == 1 else None,
    }


def facts_score(ticket: str, reply: str) -> float:
    """Share of the ticket's three facts the reply states correctly, in any wording; a reply
    that states a different order number, item or issue as well gets no credit for it."""
    from lamina.data.synthetic import PRODUCTS

    want = ticket_facts(ticket)
    numbers = set(re.findall(r"\d+", reply))
    items = {f"{c} {p}" for c in COLOURS for p in PRODUCTS if f"{c} {p}" in reply}
    codes = {code for code in ISSUES if code in reply or code.replace("_", " ") in reply}
    hits = (numbers == {want["order"]}) + (items == {want["item"]}) + (codes == {want["issue"]})
    return hits / 3


def ticket_reward(prompts: list[list[dict]], responses: list[str]) -> list[float]:
    """A programmatic reward for `ppo.reward`: the facts score of each reply to its ticket
    (the last user message), plus 0.25 when the reply uses the structured answer format."""
    out = []
    for prompt, response in zip(prompts, responses, strict=True):
        ticket = next(m["content"] for m in reversed(prompt) if m["role"] == "user")
        structured = bool(re.fullmatch(r"ORDER: \S+; ITEM: [^;]+; ISSUE: \S+", response.strip()))
        out.append(facts_score(ticket, response) + 0.25 * structured)
    return out


__all__ = ["SYSTEM", "corrupt", "preference_splits", "ticket_reward"]
