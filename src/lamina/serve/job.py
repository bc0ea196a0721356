"""One request in flight: its sequences on the engine (one per choice) and, per choice, the
token ids turned into text, stop strings applied and the output guard passed. The engine
thread hands tokens over through the event loop; the request's coroutine reads them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from lamina.serve.api import ApiError
from lamina.serve.engine import Params, Sequence
from lamina.serve.guard import Guard, GuardedText
from lamina.serve.pool import Served


@dataclass
class Choice:
    seq: Sequence
    text: GuardedText
    ids: list[int] = field(default_factory=list)
    decoded: str = ""
    output: str = ""
    finish: str | None = None


class Job:
    def __init__(self, served: Served, prompt: list[int], params: list[Params], stops: list[str], guard: Guard):
        self.served, self.prompt = served, prompt
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.started = time.perf_counter()
        self.first_token: float | None = None
        self.choices: list[Choice] = []
        for i, p in enumerate(params):
            def emit(token, finish, i=i):
                self.loop.call_soon_threadsafe(self.queue.put_nowait, (i, token, finish))

            seq = Sequence(list(prompt), p, emit, served.adapter)
            self.choices.append(Choice(seq, guard.stream(stops)))
        for c in self.choices:
            served.engine.submit(c.seq)

    @property
    def completion_tokens(self) -> int:
        return sum(len(c.ids) for c in self.choices)

    def cancel(self) -> None:
        for c in self.choices:
            c.seq.cancel()

    async def events(self) -> AsyncIterator[tuple[int, str, str | None]]:
        """(choice index, text to send, finish reason or None) until every choice has ended."""
        open_ = len(self.choices)
        while open_:
            i, token, finish = await self.queue.get()
            c = self.choices[i]
            if c.finish:
                continue  # the engine's own end of a sequence the guard or a stop already ended
            if finish == "error":
                self.cancel()
                raise ApiError(500, "generation_failed", "generation failed on the server (logged there)")
            if token is not None:
                if self.first_token is None:
                    self.first_token = time.perf_counter()
                c.ids.append(token)
                piece = self._piece(c, final=False)
                out = c.text.feed(piece)
            else:
                out = c.text.feed(self._piece(c, final=True), final=True)
            if c.text.finish:
                c.seq.cancel()
                finish = c.text.finish
            elif token is None:
                finish = "length" if finish == "length" else "stop"
            c.output += out
            if finish:
                c.finish = finish
                open_ -= 1
            if out or finish:
                yield i, out, finish

    def _piece(self, c: Choice, final: bool) -> str:
        text = self.served.tokenizer.decode(c.ids, skip_special_tokens=True)
        if not final and text.endswith("\ufffd"):
            return ""  # half of a multi-byte character: wait for the rest
        piece = text[len(c.decoded):]
        c.decoded = text
        return piece

    async def run(self) -> None:
        async for _ in self.events():
            pass
