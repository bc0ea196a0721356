"""Training on several processes started by torchrun: the distribution step of the one loop.

torchrun starts the processes, `torch.distributed` moves the tensors, DDP or FSDP2
(`fully_shard` per decoder layer) keeps the replicas in step; this module holds only what
Lamina adds on top:

- every process draws the same step from the sampler and keeps its share (balanced by
  tokens, deterministic), so N ranks see exactly the examples one process would;
- one collective per step gathers the step's global count (labelled tokens, pairs), so
  each rank divides its loss sum by the same denominator and the averaged gradients equal
  the single-process gradient; ranks with fewer micro-batches run zero-weight ones, since
  FSDP2 gathers parameters in every forward;
- every computation on the model runs as the forward of one wrapper module, so DDP's and
  FSDP2's hooks fire even though objectives call the decoder and the LM head directly;
- checkpoints through `torch.distributed.checkpoint` in safetensors files (each rank writes
  its shards, no pickle), the same tensor names as single-process checkpoints, so either
  kind loads on any number of ranks.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import random
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from lamina.errors import LaminaError
from lamina.fsio import atomic_dir, read_json, write_json
from lamina.recipe import DistributedSpec

# Methods whose frozen weights FSDP2 cannot shard: bitsandbytes' 4-bit Params4bit keep their
# quantisation state beside the packed uint8 storage, which DTensor sharding does not carry.
UNSHARDABLE = {"qlora"}


def launched() -> bool:
    """True inside a process started by torchrun (or any launcher that sets its variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank() -> int:
    return int(os.environ["RANK"]) if launched() else 0


def world() -> int:
    return int(os.environ["WORLD_SIZE"]) if launched() else 1


def launch(cli_args: list[str], nproc: int) -> int:
    """Run `python -m lamina CLI_ARGS` on `nproc` local processes through torchrun's own
    launcher; returns the exit code. When a rank fails, torchrun stops the others and the
    failing rank's error is printed here."""
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from lamina.console import console

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex[:12],
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0,
                          monitor_interval=0.2)
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "lamina", *cli_args)
    except ChildFailedError as e:
        failed_rank, failure = e.get_first_failure()
        message = failure.message  # the rank's error file: {"message": ..., "extraInfo": traceback}
        message = message.get("message", message) if isinstance(message, dict) else message
        console.print(f"[bold red]error:[/] rank {failed_rank} of {nproc} failed: {message}",
                      markup=True, highlight=False, soft_wrap=True)
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0


def record_failure(e: BaseException) -> None:
    """Leave this rank's error where torchrun's agent reads it (its error file), so the
    launcher reports the message rather than only an exit code."""
    if launched() and os.environ.get("TORCHELASTIC_ERROR_FILE"):
        from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

        ErrorHandler().record_exception(e)


_CURRENT: Dist | None = None


def current(spec: DistributedSpec) -> Dist | None:
    """This process's Dist under torchrun (the process group is started once and reused by
    every run of the process, e.g. a recipe's stages); None in a plain process."""
    global _CURRENT
    if not launched():
        return None
    if _CURRENT is None:
        _CURRENT = Dist(spec)
    _CURRENT.spec = spec
    return _CURRENT


def take_in(d: Dist | None, recipe, load: Callable):
    """The data is taken in once: rank 0 runs intake (catalog, audit log) while the others
    wait, then they read the dataset version it made."""
    if d is None or d.main:
        data = load(recipe)
        if d:
            d.broadcast(data.info["dataset_version"])
        return data
    version = d.broadcast(None)
    data_spec = recipe.data.model_copy(update={"dataset": version, "train": None, "eval": None})
    return load(recipe.model_copy(update={"data": data_spec}))


def main_first(make: Callable, result):
    """`make()` on rank 0 while the others wait; every rank returns `result` (make's, on rank 0).
    Without a process group it is just `make()`."""
    if not dist.is_initialized():
        return make()
    if dist.get_rank() == 0:
        result = make()
    dist.barrier()
    return result


def precision(spec, device: torch.device) -> str:
    """The loop's compute precision (TrainSpec.precision resolved for the device)."""
    if spec.precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return spec.precision


def plain(checkpoint: Path, d: Dist | None) -> bool:
    """A single-process checkpoint read by a single process: the original loader does it."""
    return d is None and (checkpoint / "state.safetensors").is_file()


class Replica(torch.nn.Module):
    """Runs `fn(model, *args)` as its forward: the one module DDP or FSDP2 wraps."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, fn: Callable, *args):
        return fn(self.model, *args)


class Dist:
    """This process's place in the job, and the wrapped model once `wrap` has run."""

    def __init__(self, spec: DistributedSpec):
        self.spec = spec
        self.rank = int(os.environ["RANK"])
        self.world = int(os.environ["WORLD_SIZE"])
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if torch.cuda.is_available():
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
            backend = "cuda:nccl,cpu:gloo"  # gloo for the CPU tensors of object broadcasts
        else:
            self.device = torch.device("cpu")
            backend = "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=spec.timeout_s))
        # torchrun stops the other ranks with SIGTERM when one fails: end as an exception, so the
        # run is marked failed (rank 0) rather than left "running".
        signal.signal(signal.SIGTERM, _stopped)
        self.strategy: str | None = None
        self.module: torch.nn.Module | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        dist.barrier()

    def broadcast(self, value):
        """Rank 0's value on every rank (a small picklable object; travels, never stored)."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    # -- wrapping -------------------------------------------------------------------------

    def wrap(self, model: torch.nn.Module, method: str, precision: str) -> None:
        self.strategy = choose_strategy(self.spec, model, method, self.device, self.world)
        if self.strategy == "fsdp":
            self.module = shard(model, self.spec, precision, self.device)
        else:
            self.module = replicate(model, self.device)

    def replicate_policy(self, model: torch.nn.Module, value_head: torch.nn.Module) -> Dist:
        """PPO: DDP over the policy and its value head (generation needs whole weights, so no FSDP2)."""
        self.strategy = "ddp"
        self.module = replicate(torch.nn.ModuleDict({"model": model, "value_head": value_head}), self.device)
        return self

    def sum(self, t: torch.Tensor) -> None:
        dist.all_reduce(t)

    def mean_record(self, record: dict, summed: tuple[str, ...] = ("tokens",)) -> dict:
        """A log record's floats averaged over ranks (ranks hold equal shares), `summed` keys added."""
        keys = [k for k, v in record.items() if isinstance(v, float) or k in summed]
        t = torch.tensor([float(record[k]) for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {**record, **{k: int(v) if k in summed else round(float(v) / self.world, 6)
                             for k, v in zip(keys, t.tolist(), strict=True)}}

    def forward(self, fn: Callable, *args):
        return self.module(fn, *args)

    @contextlib.contextmanager
    def sync(self, last: bool):
        """Gradients are reduced once per step, in the backward of its last micro-batch."""
        if self.strategy == "ddp" and not last:
            with self.module.no_sync():
                yield
            return
        if self.strategy == "fsdp":
            self.module.set_requires_gradient_sync(last)
        yield

    # -- the step -------------------------------------------------------------------------

    def plan_step(self, chosen: list[int], lengths: list[int], build: Callable, count_of: Callable
                  ) -> tuple[list, list[float], int, int]:
        """This rank's micro-batches of the step, their weights (0 for padding), the step's
        global count and global tokens. `build(indices)` packs examples into micro-batches."""
        mine = share(chosen, lengths, self.world)[self.rank]
        real = bool(mine)
        batches = build(mine if real else chosen[:1])  # a rank with nothing still joins the collectives
        count = sum(count_of(b) for b in batches) if real else 0
        tokens = sum(b.n_tokens for b in batches) if real else 0
        local = torch.tensor([count, tokens, len(batches)], dtype=torch.float64)
        parts = [torch.zeros_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local)  # the step's one collective outside DDP/FSDP2's own
        table = torch.stack(parts)
        n_micro = int(table[:, 2].max())
        weights = [1.0 if real else 0.0] * len(batches) + [0.0] * (n_micro - len(batches))
        batches = batches + [batches[-1]] * (n_micro - len(batches))
        return batches, weights, int(table[:, 0].sum()), int(table[:, 1].sum())

    def reduce_window(self, values: list[torch.Tensor]) -> list[torch.Tensor]:
        """Log-time sums over ranks of [window loss, *metric sums]; the loss comes back as the mean."""
        flat = torch.stack([v.detach().float().reshape(()) for v in values])
        dist.all_reduce(flat)
        flat[0] /= self.world  # each rank divided by count / world: the sum over ranks is world x the mean
        return list(flat.unbind())

    def any(self, flag: bool) -> bool:
        t = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    # -- outputs --------------------------------------------------------------------------

    def gather_for_save(self, model: torch.nn.Module) -> None:
        """After training: rank 0's model holds full trainable tensors, so a method's own save
        writes the same artifact as a single-process run. Collective; FSDP2 only."""
        if self.strategy != "fsdp":
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
        full = get_model_state_dict(model, options=options)
        if self.main:
            replace_parameters(model, full)

    # -- checkpoints ----------------------------------------------------------------------

    def save_checkpoint(self, path: Path, model, optimizer, sampler, state) -> None:
        """Each rank writes its shards; rank 0 adds state.json and renames the directory into
        place, so a save killed on any rank leaves the previous checkpoint whole."""
        tensors, meta = checkpoint_payload(model, optimizer, sampler, state)
        if self.main:
            with atomic_dir(path, replace=True) as tmp:
                self.broadcast(str(tmp))
                dcp.save(tensors, storage_writer=_writer(tmp))
                write_json(tmp / "state.json", meta)
        else:
            tmp = self.broadcast(None)
            dcp.save(tensors, storage_writer=_writer(Path(tmp)))
        self.barrier()  # nobody trains on while rank 0 is still renaming


class Stopped(SystemExit):
    """This rank was stopped by the launcher because another rank failed."""


def _stopped(signum, frame) -> None:
    raise Stopped(f"stopped by the launcher (signal {signum}): another rank failed")


def _writer(path: Path):
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    return HuggingFaceStorageWriter(str(path), save_distributed=True)


def share(chosen: list[int], lengths: list[int], world: int) -> list[list[int]]:
    """Split one step's examples over ranks, longest first onto the least-loaded rank
    (ties to the lower rank); each rank keeps the step's order. Same answer on every rank."""
    load = [0] * world
    owner: dict[int, int] = {}
    for pos in sorted(range(len(chosen)), key=lambda k: (-lengths[chosen[k]], k)):
        r = min(range(world), key=lambda q: (load[q], q))
        owner[pos] = r
        load[r] += lengths[chosen[pos]]
    return [[chosen[k] for k in range(len(chosen)) if owner[k] == r] for r in range(world)]


def trainable_bytes(model: torch.nn.Module) -> int:
    """Memory a replica needs: frozen weights once, trainable ones with an fp32 gradient
    and AdamW's two fp32 moments."""
    total = 0
    for p in model.parameters():
        total += p.numel() * p.element_size()
        if p.requires_grad:
            total += p.numel() * 12
    return total


def device_bytes(device: torch.device, world: int) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    # CPU ranks share the host's memory.
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // max(world, 1)


def choose_strategy(spec: DistributedSpec, model, method: str, device, world: int) -> str:
    if method in UNSHARDABLE:
        if spec.strategy == "fsdp":
            raise LaminaError(
                "FSDP2 cannot shard QLoRA's 4-bit base weights (bitsandbytes keeps their quantisation "
                "state outside the tensor); use ddp (or auto), which replicates the 4-bit base and "
                "all-reduces only the LoRA gradients", "distributed.strategy")
        return "ddp"
    if spec.strategy != "auto":
        return spec.strategy
    # Replicas need their state plus room for activations: half the device is the line.
    return "ddp" if trainable_bytes(model) <= device_bytes(device, world) // 2 else "fsdp"


def replicate(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel as DDP

    rep = Replica(model)
    # Frozen weights are identical on every rank (same files, same seed): do not broadcast them.
    frozen = [f"model.{n}" for n, p in model.named_parameters() if not p.requires_grad]
    DDP._set_params_and_buffers_to_ignore_for_model(rep, frozen)
    ids = [device.index] if device.type == "cuda" else None
    return DDP(rep, device_ids=ids, broadcast_buffers=False)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(base.get_decoder(), "layers", None)
    if layers is None:
        raise LaminaError(f"{type(base).__name__} has no decoder `layers` to shard", "distributed.strategy")
    return list(layers)


def shard(model: torch.nn.Module, spec: DistributedSpec, precision: str, device) -> torch.nn.Module:
    """FSDP2: one unit per decoder layer, the rest (embeddings, final norm, head, prompt
    encoders) in the root unit."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    kw = {}
    if precision == "bf16":
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if spec.cpu_offload:
        kw["offload_policy"] = CPUOffloadPolicy()
    for layer in decoder_layers(model):
        fully_shard(layer, reshard_after_forward=spec.reshard_after_forward, **kw)
    # The root's parameters are needed again at once by the backward: keep them gathered.
    return fully_shard(Replica(model), reshard_after_forward=False, **kw)


def replace_parameters(model: torch.nn.Module, full: dict[str, torch.Tensor]) -> None:
    """Swap each named parameter (and every tied alias of it) for a plain full tensor."""
    named = dict(model.named_parameters(remove_duplicate=False))
    new_of: dict[int, torch.nn.Parameter] = {}
    for name, tensor in full.items():
        old = named.get(name)
        if old is not None and id(old) not in new_of:
            new_of[id(old)] = torch.nn.Parameter(tensor, requires_grad=old.requires_grad)
    for module in model.modules():
        for key, p in list(module._parameters.items()):
            if p is not None and id(p) in new_of:
                module._parameters[key] = new_of[id(p)]


# -- checkpoint payload: the same names as lamina.train.checkpoint's single-process files ------


def checkpoint_payload(model, optimizer, sampler, state) -> tuple[dict[str, torch.Tensor], dict]:
    from lamina.train.checkpoint import payload

    tensors, meta = payload(model, optimizer, sampler, state, to_cpu=False)
    return tensors, {**meta, "format": "dcp-safetensors"}


def load_checkpoint(path: Path, model, optimizer, sampler, state) -> dict:
    """Load a checkpoint saved on any number of ranks (or by one process) into this rank's
    parameters and optimiser state, resharding as needed. Works without a process group."""
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    from lamina.train.checkpoint import _py_rng_from_json, trainable

    meta = read_json(path / "state.json")
    reader = HuggingFaceStorageReader(str(path))
    saved = reader.read_metadata().state_dict_metadata
    params = trainable(model)
    targets = {f"param/{n}": p.detach() for n, p in params.items()}
    moments: dict[str, dict[str, torch.Tensor]] = {}
    for name, p in params.items():
        prefix = f"optim/{name}/"
        for key, md in saved.items():
            if not key.startswith(prefix):
                continue
            if tuple(md.size) == tuple(p.shape):  # shaped like its parameter: sharded the same way
                t = torch.zeros_like(p, dtype=md.properties.dtype)
            else:
                t = torch.zeros(md.size, dtype=md.properties.dtype, device=_local(p).device)
            moments.setdefault(name, {})[key[len(prefix):]] = t
            targets[key] = t
    targets["rng/torch"] = torch.get_rng_state()
    missing = [k for k in targets if k not in saved]
    if missing:
        raise LaminaError(f"checkpoint lacks {missing[0]} (a different method or model?)", str(path))
    dcp.load(targets, storage_reader=reader)
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = next(n for n, q in params.items() if q is p)
            if name not in meta["optimizer_scalars"]:
                continue
            where = _local(p).device if optimizer.defaults.get("fused") else "cpu"
            st = {k: torch.tensor(v, dtype=torch.float32, device=where)
                  for k, v in meta["optimizer_scalars"][name].items()}
            st.update(moments.get(name, {}))
            optimizer.state[p] = st
    torch.set_rng_state(targets["rng/torch"])
    random.setstate(_py_rng_from_json(meta["python_rng"]))
    sampler.load_state_dict(meta["sampler"])
    state.step, state.tokens = meta["step"], meta["tokens"]
    state.loss_tokens, state.seconds = meta["loss_tokens"], meta["seconds"]
    return meta


def _local(p: torch.Tensor) -> torch.Tensor:
    return p.to_local() if hasattr(p, "to_local") else p
