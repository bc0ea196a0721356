"""Bundled preference pairs for the ticket task, generated deterministically.

The chosen reply is the correct triage answer; the rejected one is a plausible wrong answer
that gets exactly one field wrong in the way a weak model does: a related but wrong issue
code (with its team), the wrong team for the right issue, or the priority flipped.
Held-out pairs come from the held-out tickets of `lamina.data.synthetic.task_splits`, so
their texts never appear in training.
"""

from __future__ import annotations

import random
import re

from lamina.data.synthetic import ISSUES, PRIORITIES, SYSTEM, TEAM_OF, answer, parse_answer, task_splits

# Issue codes customers' wording is most often confused with.
NEAR_ISSUES = {
    "broken": ["missing", "wrong"],
    "late": ["missing", "refund"],
    "wrong": ["broken", "refund"],
    "refund": ["late", "wrong"],
    "missing": ["broken", "late"],
}
TEAMS = sorted(set(TEAM_OF.values()))


def corrupt(reply: str, rng: random.Random) -> str:
    """A plausible wrong answer: one fact changed."""
    f = parse_answer(reply)
    if f is None:
        raise ValueError(f"not a structured answer: {reply!r}")
    which = rng.choice(["issue", "team", "priority"])
    if which == "issue":
        f["issue"] = rng.choice(NEAR_ISSUES[f["issue"]])
        f["team"] = TEAM_OF[f["issue"]]
    elif which == "team":
        f["team"] = rng.choice([t for t in TEAMS if t != f["team"]])
    else:
        f["priority"] = next(p for p in PRIORITIES if p != f["priority"])
    return answer(f["team"], f["issue"], f["priority"])


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
    """Team, issue code and priority a ticket implies (None for an issue it does not state
    unambiguously)."""
    from lamina.data.synthetic import URGENCY

    issues = [code for code, phrases in ISSUES.items() if any(ph in ticket for ph in phrases)]
    issue = issues[0] if len(issues) == 1 else None
    urgent = any(cue and cue in ticket for cue in URGENCY["high"])
    return {"team": TEAM_OF[issue] if issue else None, "issue": issue, "priority": "high" if urgent else "normal"}


def facts_score(ticket: str, reply: str) -> float:
    """Share of the ticket's three facts the reply states correctly, in any wording; a reply
    that names a second issue code, team or priority as well gets no credit for that fact."""
    want = ticket_facts(ticket)
    words = set(re.findall(r"[a-z]+", reply.lower()))
    teams = words & set(TEAMS)
    codes = words & set(ISSUES)
    priorities = words & set(PRIORITIES)
    hits = (teams == {want["team"]}) + (codes == {want["issue"]}) + (priorities == {want["priority"]})
    return hits / 3


def ticket_reward(prompts: list[list[dict]], responses: list[str]) -> list[float]:
    """A programmatic reward for `ppo.reward`: the facts score of each reply to its ticket
    (the last user message), plus 0.25 when the reply uses the structured answer format."""
    out = []
    for prompt, response in zip(prompts, responses, strict=True):
        ticket = next(m["content"] for m in reversed(prompt) if m["role"] == "user")
        structured = parse_answer(response) is not None
        out.append(facts_score(ticket, response) + 0.25 * structured)
    return out


__all__ = ["SYSTEM", "corrupt", "preference_splits", "ticket_reward"]
