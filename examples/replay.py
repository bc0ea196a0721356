"""Replay held-out chat records against a running `lamina serve` as many callers, and rate
each answer through POST /v1/feedback: 1 when it equals the record's reference answer, else 0.

What a team does with a labelled replay set during a canary: the ratings become the
versions' `live.feedback_score`, which a rollout guard compares with the champion's.

    python examples/replay.py .lamina/demo/tickets-eval.jsonl --model support-tickets@production

Request j comes from caller j mod --callers, and each caller walks the records from its own
starting point, so the few callers a 10 % canary takes still send many different records.

Needs the `openai` package; the API key comes from $KEY (see `lamina keys issue`).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys

import httpx
import openai
from openai import OpenAI


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("records", help="chat JSONL: each line {'messages': [..., {'role': 'assistant', ...}]}")
    p.add_argument("--model", required=True, help="NAME@ALIAS the server serves")
    p.add_argument("--url", default="http://127.0.0.1:8000/v1")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--callers", type=int, default=50, help="distinct `user` values (a rollout is sticky per caller)")
    p.add_argument("--max-tokens", type=int, default=32)
    args = p.parse_args()
    records = [json.loads(line) for line in open(args.records, encoding="utf-8") if line.strip()]
    key = os.environ.get("KEY", "none")
    client = OpenAI(base_url=args.url, api_key=key, timeout=60, max_retries=0)
    feedback = httpx.Client(base_url=args.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    seen: dict[str, list[float]] = collections.defaultdict(list)
    last: dict[str, int] = {}
    failed = 0
    for j in range(args.requests):
        caller, rounds = j % args.callers, j // args.callers
        record = records[(caller * 37 + rounds) % len(records)]
        *prompt, answer = record["messages"]
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=args.model, messages=prompt, max_tokens=args.max_tokens, temperature=0,
                user=f"caller-{caller}",
            )
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError,
                openai.BadRequestError) as e:  # the replay is misconfigured: no point in going on
            print(f"error: {e}", file=sys.stderr)
            return 2
        except Exception as e:  # counted, not fatal: the point is to see whether any request fails
            failed += 1
            print(f"request {j} failed: {e}", file=sys.stderr)
            continue
        reply, version = raw.parse(), raw.headers["x-lamina-version"]
        rating = 1.0 if reply.choices[0].message.content.strip() == answer["content"].strip() else 0.0
        feedback.post("/feedback", json={"id": reply.id, "rating": rating}).raise_for_status()
        seen[version].append(rating)
        last[version] = j
    for version, ratings in sorted(seen.items()):
        print(f"{version}: {len(ratings)} answers, mean rating {sum(ratings) / len(ratings):.3f}, "
              f"last at request {last[version]}")
    print(f"failed requests: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
