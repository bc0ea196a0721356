"""Resumable checkpoints, written atomically, safetensors only.

A checkpoint holds everything the next step depends on: the trainable parameters, the
optimiser's moments, the step (the schedule is a pure function of it), the data position
and every RNG state. Tensors go to safetensors; the rest to JSON — no pickle anywhere. That
is why this format is Lamina's own: torch.save, Trainer and DCP checkpoints pickle their state.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lamina import rundir
from lamina.fsio import atomic_dir, read_json, write_json


def trainable(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def payload(model, optimizer, sampler, state, to_cpu: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """A checkpoint's tensors (trainable parameters, optimiser moments, torch's RNG) and its
    metadata, under the names every loader reads; shared by the one-process save and the
    sharded (DCP) one, which keeps tensors where they are (`to_cpu=False`)."""
    params = trainable(model)
    name_of = {id(p): n for n, p in params.items()}
    place = (lambda t: t.detach().contiguous().cpu()) if to_cpu else (lambda t: t.detach())
    tensors = {f"param/{n}": place(p) for n, p in params.items()}
    moments: dict[str, dict] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            if not st:
                continue
            name = name_of[id(p)]
            scalars = {}
            for key, value in st.items():
                if isinstance(value, torch.Tensor) and value.ndim > 0:
                    tensors[f"optim/{name}/{key}"] = place(value)
                else:
                    scalars[key] = float(value)
            moments[name] = scalars
    tensors["rng/torch"] = torch.get_rng_state()
    meta = {
        "step": state.step,
        "tokens": state.tokens,
        "loss_tokens": state.loss_tokens,
        "seconds": state.seconds,
        "sampler": sampler.state_dict(),
        "optimizer_scalars": moments,
        "python_rng": _py_rng_to_json(random.getstate()),
    }
    return tensors, meta


def save_checkpoint(path: Path, model, optimizer, sampler, state, extra: dict | None = None) -> None:
    tensors, meta = payload(model, optimizer, sampler, state)
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda{i}"] = s
    meta.update(extra or {})
    with atomic_dir(path, replace=True) as tmp:
        save_file(tensors, str(tmp / "state.safetensors"))
        write_json(tmp / "state.json", meta)


def load_checkpoint(path: Path, model, optimizer, sampler, state) -> dict:
    tensors = load_file(str(path / "state.safetensors"))
    meta = read_json(path / "state.json")
    params = trainable(model)
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(tensors[f"param/{n}"].to(p.device, p.dtype))
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = next(n for n, q in params.items() if q is p)
            if name not in meta["optimizer_scalars"]:
                continue
            # Fused AdamW keeps its step counter on the parameter's device, the others on the CPU.
            where = p.device if optimizer.defaults.get("fused") else "cpu"
            st = {k: torch.tensor(v, dtype=torch.float32, device=where)
                  for k, v in meta["optimizer_scalars"][name].items()}
            prefix = f"optim/{name}/"
            for key, value in tensors.items():
                if key.startswith(prefix):
                    st[key[len(prefix):]] = value.to(p.device)
            optimizer.state[p] = st
    torch.set_rng_state(tensors["rng/torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng/cuda"))]
        if states:
            torch.cuda.set_rng_state_all(states)
    random.setstate(_py_rng_from_json(meta["python_rng"]))
    sampler.load_state_dict(meta["sampler"])
    state.step, state.tokens = meta["step"], meta["tokens"]
    state.loss_tokens, state.seconds = meta["loss_tokens"], meta["seconds"]
    return meta


def latest(run_dir: Path) -> Path | None:
    ckpts = sorted((run_dir / rundir.CHECKPOINTS).glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    ckpts = [c for c in ckpts if (c / "state.json").is_file()]
    return ckpts[-1] if ckpts else None


def _py_rng_to_json(state) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _py_rng_from_json(data) -> tuple:
    return (data[0], tuple(data[1]), data[2])
