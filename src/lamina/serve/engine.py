"""Continuous batching over one model: a request joins the running batch at the next decode
step, leaves when it is done, and its rows of the KV cache are dropped at once.

The batch's KV cache is one left-padded key and value tensor per layer, [rows, heads, length,
dim], with a [rows, length] mask of real positions. A new request is prefilled alone and its
cache is padded into the batch; a finished one is cut out with `index_select`, and columns no
remaining row uses are trimmed from the left. Each row carries its own position ids, so
padding never shifts a request's positions, and its own adapter name: a PEFT LoRA model runs
rows of different adapters in one forward (PEFT's `adapter_names`). Models whose method puts
virtual tokens before the prompt (prompt and prefix tuning) decode without a cache, one row at
a time, as `lamina.models.generate` does for them.

`Engine.run_forever` is the serving thread; `generate_batch` drives the same engine to
completion on the caller's thread, for offline batch generation (evaluation, RL rollouts).
"""

from __future__ import annotations

import functools
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

log = logging.getLogger("lamina.serve")
BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@dataclass
class Params:
    """How one sequence is decoded. `seed` makes sampling reproducible per sequence."""

    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None


# emit(token, finish): a token id with finish None, or token None with the finish reason.
Emit = Callable[[int | None, str | None], None]
_ids = itertools.count(1)


@dataclass
class Sequence:
    prompt: list[int]
    params: Params
    emit: Emit
    adapter: str | None = None
    id: int = field(default_factory=lambda: next(_ids))
    generated: list[int] = field(default_factory=list)
    cancelled: bool = False
    generator: torch.Generator | None = None

    def cancel(self) -> None:
        """Leave at the next step (the client went away); safe from any thread."""
        self.cancelled = True


def sample(logits: torch.Tensor, params: Params, generator: torch.Generator | None) -> int:
    """One token from a row of logits: greedy at temperature 0, else top-p sampling."""
    if params.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / params.temperature, -1)
    if params.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < params.top_p
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p * keep)
    return int(torch.multinomial(probs, 1, generator=generator))


def _left_pad(t: torch.Tensor, to: int, dim: int) -> torch.Tensor:
    missing = to - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim)


@functools.cache
def _slab_class():
    from transformers.cache_utils import DynamicLayer

    class Slab(DynamicLayer):
        """A KV cache layer with room to grow: a decode step writes its column in place
        (DynamicLayer concatenates, copying the whole cache every step)."""

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, room: int):
            super().__init__()
            b, h, n, _ = keys.shape
            self.buf_k = keys.new_empty(b, h, n + room, keys.shape[3])
            self.buf_v = values.new_empty(b, h, n + room, values.shape[3])
            self.buf_k[:, :, :n], self.buf_v[:, :, :n] = keys, values
            self.n, self.device, self.is_initialized = n, keys.device, True
            self._view()

        def _view(self) -> None:
            self.keys, self.values = self.buf_k[:, :, : self.n], self.buf_v[:, :, : self.n]

        def update(self, key_states, value_states, *args, **kwargs):
            t = key_states.shape[-2]
            if self.n + t > self.buf_k.shape[2]:
                grow = max(t, self.buf_k.shape[2] // 2, 64)
                self.buf_k = torch.cat([self.buf_k, self.buf_k.new_empty(*self.buf_k.shape[:2], grow,
                                                                          self.buf_k.shape[3])], 2)
                self.buf_v = torch.cat([self.buf_v, self.buf_v.new_empty(*self.buf_v.shape[:2], grow,
                                                                          self.buf_v.shape[3])], 2)
            self.buf_k[:, :, self.n : self.n + t] = key_states
            self.buf_v[:, :, self.n : self.n + t] = value_states
            self.n += t
            self._view()
            return self.keys, self.values

    return Slab


class Engine:
    """Decodes every admitted sequence one token per step, in one batch.

    `stack`: a LoraStack on the model; rows name their adapter in it (None: the base).
    `multi_adapter`: the model is a PEFT LoRA model and rows name their PEFT adapter.
    `cached`: False for prompt-side methods (no KV cache; one row at a time).
    Adapters are loaded and deleted between steps through `call`, never during a forward.
    """

    def __init__(self, model, eos_ids: set[int], max_batch: int = 64, multi_adapter: bool = False,
                 cached: bool = True, on_step: Callable[[dict], None] | None = None, prefill_tokens: int = 8192,
                 stack=None):
        self.model = model
        self.device = next(model.parameters()).device
        self.eos_ids = set(eos_ids)
        self.max_batch = max_batch
        self.prefill_tokens = prefill_tokens
        self.stack = stack  # a LoraStack: the model's adapters, mixed per row (lora_stack.py)
        self.multi_adapter = multi_adapter
        self.cached = cached
        self.on_step = on_step
        self.waiting: deque[Sequence] = deque()
        self.rows: list[Sequence] = []
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.mask: torch.Tensor | None = None
        self.positions: torch.Tensor | None = None
        self.last: torch.Tensor | None = None  # the token each row feeds next
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = False
        self.thread: threading.Thread | None = None
        self.cache_kw = _cache_keyword(model)
        self._joining: list[Sequence] = []
        self._slabs: list | None = None  # the cache laid out with room to grow (_slab_class)

    # -- other threads ------------------------------------------------------------------
    def submit(self, seq: Sequence) -> Sequence:
        if seq.params.seed is not None:
            seq.generator = torch.Generator(device=self.device).manual_seed(seq.params.seed)
        self.waiting.append(seq)
        self._wake.set()
        return seq

    def call(self, fn: Callable[[], object]) -> Future:
        """Run `fn` on the engine's thread between two steps (model surgery happens here)."""
        future: Future = Future()
        self._commands.put((fn, future))
        self._wake.set()
        if self.thread is None:  # not serving: nothing else touches the model
            self._run_commands()
        return future

    def start(self, name: str = "lamina-engine") -> None:
        self.thread = threading.Thread(target=self.run_forever, name=name, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        if self.thread is not None:
            self.thread.join(timeout=10)

    def load(self) -> dict:
        """What the metrics read: rows running and waiting, KV positions used and held."""
        used = int(self.mask.sum()) if self.mask is not None else 0
        held = int(self.mask.numel()) if self.mask is not None else 0
        return {"running": len(self.rows), "waiting": len(self.waiting), "kv_used": used, "kv_held": held}

    # -- the engine thread --------------------------------------------------------------
    def run_forever(self) -> None:
        with torch.inference_mode():
            while not self._stop:
                try:
                    busy = self.step()
                except Exception:  # e.g. out of memory: fail the batch, keep serving
                    log.exception("decode step failed; ending the %d sequences in the batch", len(self.rows))
                    self._fail_batch()
                    continue
                if not busy:
                    self._wake.wait(0.05)
                    self._wake.clear()
            for seq in list(self.rows) + list(self.waiting):
                seq.emit(None, "cancelled")

    def step(self) -> bool:
        """One scheduling step: commands, leavers, joiners, one decode. False when idle."""
        self._run_commands()
        self._drop([i for i, s in enumerate(self.rows) if s.cancelled], "cancelled")
        joined = self._admit()
        if not self.rows:
            return joined
        started = time.perf_counter()
        batch = len(self.rows)
        if self.cached:
            self._decode_cached()
        else:
            self._decode_uncached()
        if self.on_step:
            self.on_step({"batch": batch, "seconds": time.perf_counter() - started, **self.load()})
        return True

    def _fail_batch(self) -> None:
        rows, self.rows = self.rows + [s for s in self._joining if s not in self.rows], []
        self._joining = []
        self.keys, self.values, self.mask, self.positions, self.last = [], [], None, None, None
        self._slabs = None
        for seq in rows:
            seq.emit(None, "error")

    def _run_commands(self) -> None:
        while True:
            try:
                fn, future = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(fn())
            except BaseException as e:  # handed to the caller, who decides what it means
                future.set_exception(e)

    def _adapter_kwargs(self, rows: list[Sequence]) -> dict:
        if self.stack is not None:
            self.stack.set_rows([s.adapter for s in rows], self.device)
            return {}
        if not self.multi_adapter:
            return {}
        names = [s.adapter or BASE_ADAPTER for s in rows]
        if names[0] != BASE_ADAPTER and names.count(names[0]) == len(names):
            # One adapter in the whole batch (the common case): PEFT's plain forward, which skips
            # the per-adapter split of a mixed batch.
            if self.model.active_adapter != names[0]:
                self.model.set_adapter(names[0])
            return {}
        return {"adapter_names": names}

    def _admit(self) -> bool:
        """Take waiting sequences into the batch: one prefill forward per step, up to
        `prefill_tokens` prompt tokens, so running rows keep decoding between prefills."""
        group, tokens = [], 0
        while self.waiting and len(self.rows) + len(group) < self.max_batch:
            seq = self.waiting[0]
            if seq.cancelled:
                self.waiting.popleft()
                seq.emit(None, "cancelled")
                continue
            if group and tokens + len(seq.prompt) > self.prefill_tokens:
                break
            group.append(self.waiting.popleft())
            tokens += len(seq.prompt)
        if not group:
            return False
        self._joining = group  # failed with the batch if their prefill raises
        if self.cached:
            self._prefill(group)
        else:
            self.rows += group
        self._joining = []
        return True

    def _prefill(self, group: list[Sequence]) -> None:
        """One forward over the group's prompts (left-padded), first tokens sampled, and their
        cache rows padded into the batch's."""
        from transformers import DynamicCache

        n = max(len(s.prompt) for s in group)
        ids = torch.tensor([[0] * (n - len(s.prompt)) + s.prompt for s in group], device=self.device)
        mask = torch.tensor([[0] * (n - len(s.prompt)) + [1] * len(s.prompt) for s in group], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                         **{self.cache_kw: DynamicCache()}, use_cache=True, logits_to_keep=1,
                         **self._adapter_kwargs(group))
        logits = out.logits[:, -1]
        tokens = [sample(logits[i], s.params, s.generator) for i, s in enumerate(group)]
        keep = [i for i, (s, t) in enumerate(zip(group, tokens, strict=True)) if not self._emit(s, t)]
        if not keep:
            return
        rows = torch.tensor(keep, device=self.device)
        layers = _cache_of(out).layers
        new_k = [layer.keys.index_select(0, rows) for layer in layers]
        new_v = [layer.values.index_select(0, rows) for layer in layers]
        new_mask = mask.index_select(0, rows)
        new_pos = torch.tensor([len(group[i].prompt) for i in keep], device=self.device)
        new_last = torch.tensor([tokens[i] for i in keep], device=self.device)
        if self.mask is None:
            self.keys, self.values, self.mask, self.positions, self.last = new_k, new_v, new_mask, new_pos, new_last
        else:
            length = max(n, self.mask.shape[1])
            pad = lambda t: _left_pad(t, length, 2)  # noqa: E731
            self.keys = [torch.cat([pad(a), pad(b)]) for a, b in zip(self.keys, new_k, strict=True)]
            self.values = [torch.cat([pad(a), pad(b)]) for a, b in zip(self.values, new_v, strict=True)]
            self.mask = torch.cat([_left_pad(self.mask, length, 1), _left_pad(new_mask, length, 1)])
            self.positions = torch.cat([self.positions, new_pos])
            self.last = torch.cat([self.last, new_last])
        self.rows += [group[i] for i in keep]
        self._slabs = None

    def _decode_cached(self) -> None:
        from transformers import DynamicCache

        mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], 1)
        if self._slabs is None:  # the batch's rows changed: lay the cache out again, with room
            slab = _slab_class()
            self._slabs = [slab(k, v, 64) for k, v in zip(self.keys, self.values, strict=True)]
        cache = DynamicCache()
        cache.layers = list(self._slabs)
        out = self.model(input_ids=self.last[:, None], attention_mask=mask, position_ids=self.positions[:, None],
                         **{self.cache_kw: cache}, use_cache=True, **self._adapter_kwargs(self.rows))
        layers = _cache_of(out).layers
        self.keys = [layer.keys for layer in layers]
        self.values = [layer.values for layer in layers]
        self.mask, self.positions = mask, self.positions + 1
        logits = out.logits[:, -1]
        picked = logits.argmax(-1)
        greedy = picked.tolist()  # one host sync for the whole batch
        tokens = [g if s.params.temperature <= 0 else sample(logits[i], s.params, s.generator)
                  for i, (s, g) in enumerate(zip(self.rows, greedy, strict=True))]
        # All greedy (the common case): the next input is already on the device.
        self.last = picked if tokens == greedy else torch.tensor(tokens, device=self.device)
        done = [i for i, (s, t) in enumerate(zip(self.rows, tokens, strict=True)) if self._emit(s, t)]
        self._drop(done, None)

    def _decode_uncached(self) -> None:
        done = []
        for i, seq in enumerate(self.rows):
            ids = torch.tensor([seq.prompt + seq.generated], device=self.device)
            logits = self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1]
            if self._emit(seq, sample(logits, seq.params, seq.generator)):
                done.append(i)
        keep = [s for i, s in enumerate(self.rows) if i not in set(done)]
        self.rows = keep

    def _emit(self, seq: Sequence, token: int) -> bool:
        """Hand a token to the request; True when the sequence is finished."""
        if token in self.eos_ids:
            seq.emit(None, "stop")
            return True
        seq.generated.append(token)
        seq.emit(token, None)
        if seq.cancelled:
            seq.emit(None, "cancelled")
            return True
        if len(seq.generated) >= seq.params.max_tokens:
            seq.emit(None, "length")
            return True
        return False

    def _drop(self, indices: list[int], reason: str | None) -> None:
        if not indices:
            return
        gone = set(indices)
        for i in indices:
            if reason:
                self.rows[i].emit(None, reason)
        self.rows = [s for i, s in enumerate(self.rows) if i not in gone]
        if not self.cached:
            return
        if not self.rows:
            self.keys, self.values, self.mask, self.positions, self.last = [], [], None, None, None
            self._slabs = None
            return
        self._slabs = None
        keep = torch.tensor([i for i in range(len(gone) + len(self.rows)) if i not in gone], device=self.device)
        self.mask = self.mask.index_select(0, keep)
        # Columns that only finished rows used are padding for everyone left: cut them.
        first = int(self.mask.any(0).long().argmax())
        self.mask = self.mask[:, first:]
        self.keys = [k.index_select(0, keep)[:, :, first:] for k in self.keys]
        self.values = [v.index_select(0, keep)[:, :, first:] for v in self.values]
        self.positions = self.positions.index_select(0, keep)
        self.last = self.last.index_select(0, keep)


def eos_ids(model, tokenizer) -> set[int]:
    """Every token id that ends a turn: the tokenizer's EOS and the generation config's."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    config = getattr(model, "generation_config", None)
    extra = getattr(config, "eos_token_id", None) if config is not None else None
    ids |= set(extra) if isinstance(extra, list) else ({extra} if extra is not None else set())
    return ids


def generate_batch(model, prompts: list[list[int]], params: Params | list[Params], eos: set[int],
                   adapters: list[str | None] | None = None, max_batch: int = 64, stack=None) -> list[list[int]]:
    """New token ids for each prompt, decoded with continuous batching on this thread.

    `adapters` names an adapter per prompt (mixed in one batch; None: the base): one loaded in
    `stack` (a LoraStack on `model`) or, without a stack, a PEFT adapter of `model`."""
    params = params if isinstance(params, list) else [params] * len(prompts)
    engine = Engine(model, eos, max_batch=max_batch, multi_adapter=adapters is not None and stack is None,
                    cached=not _prompt_learning(model), stack=stack)
    outputs: list[list[int]] = [[] for _ in prompts]
    for i, (prompt, p) in enumerate(zip(prompts, params, strict=True)):
        def emit(token, finish, out=outputs[i]):
            if token is not None:
                out.append(token)

        engine.submit(Sequence(list(prompt), p, emit, adapters[i] if adapters else None))
    with torch.inference_mode():
        while engine.step():
            pass
    return outputs


def _cache_keyword(model) -> str:
    """transformers 5.24 renamed `past_key_values` to `cache` (the old name warns); 5.17 has only
    the old one."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _prompt_learning(model) -> bool:
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))
