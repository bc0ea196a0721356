"""Bundled preference pairs for the ticket task, generated deterministically.

The chosen reply is the correct structured answer; the rejected one is a plausible wrong
answer that gets exactly one field wrong in the way a weak model does: a digit of the order
number changed or two digits swapped, the right product in the wrong colour, or a related
but wrong issue code. Held-out pairs come from the held-out tickets of
`lamina.data.synthetic.task_splits`, so their orders never appear in training.
"""

from __future__ import annotations

import random

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


def ticket_reward(prompts: list[list[dict]], responses: list[str]) -> list[float]:
    """A programmatic reward for the ticket task: the share of the three fields that are
    right, read off the ticket itself (order number and colour+product appear verbatim),
    minus 0.5 for a reply that is not in the structured format at all."""
    from lamina.data.synthetic import PRODUCTS

    out = []
    for prompt, response in zip(prompts, responses, strict=True):
        ticket = prompt[-1]["content"]
        try:
            f = _fields(response.strip())
        except ValueError:
            out.append(-0.5)
            continue
        words = (
            ticket.replace(",", " ").replace(".", " ").replace("(", " ").replace(")", " ").replace(":", " ")
        )
        order_ok = f["order"].isdigit() and f["order"] in words.split()
        item_ok = any(f"{c} {p}" == f["item"] and f["item"] in ticket for c in COLOURS for p in PRODUCTS)
        issue_ok = any(phrase in ticket for phrase in ISSUES.get(f["issue"], []))
        out.append((order_ok + item_ok + issue_ok) / 3)
    return out


__all__ = ["SYSTEM", "corrupt", "preference_splits", "ticket_reward"]
