"""Multi-process training on PyTorch's own ``torch.distributed``, launched with ``torchrun``.

longseq has no launcher of its own: ``torchrun --nproc-per-node N -m longseq train ...`` starts N
copies of the ordinary command and :func:`setup` (called by the trainer) joins them into one
process group from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``); a process group the caller initialised already is used as is.
Without torchrun (or with ``WORLD_SIZE=1``) the trainer runs its plain single-process code.

* Backend: ``nccl`` when the device is CUDA (each rank takes ``cuda:LOCAL_RANK``), ``gloo`` on CPU.
* Strategy: ``DistributedDataParallel`` by default (every rank holds the whole model; gradients
  are all-reduced and averaged during backward). ``fsdp=True`` shards parameters, gradients and
  optimizer state with FSDP2 (``fully_shard``): each layer of every top-level ``nn.ModuleList``
  stack is one unit, the root holds the rest; parameters are resharded after forward (full
  sharding). Both start from rank 0's initial weights (DDP broadcasts them; before sharding we do).
* Data: the global batch of every (step, micro-batch) is the one a single process draws
  (``trainer.batch_indices``); rank r takes the contiguous slice ``[r*b, (r+1)*b)`` with
  ``b = batch_size / world``. The ranks therefore read disjoint shards of every epoch's seeded
  permutation, and the data order (the sampler state) is the step counter alone.
* Loss: each rank's mean loss is rescaled by ``n_r * world / N`` (``n_r`` its count of targets, N
  the global count), so that the average of the ranks' gradients that DDP/FSDP compute is the
  gradient of the mean over the global batch, also for LM tasks where ranks hold different
  numbers of target tokens. Auxiliary losses (``aux_loss``) are averaged over the ranks.
* State: checkpoints and the final model hold plain (unwrapped, unsharded) state dicts written by
  rank 0 (FSDP: parameter and optimizer tensors are all-gathered one at a time and kept on rank
  0's CPU), so they load into any world size, with or without FSDP. On resume every rank reads
  the checkpoint file: the run directory must be visible from every node.
* Failure: the process-group ``timeout`` bounds how long a rank waits in a collective for a peer
  that hangs; it then raises (gloo) or is aborted by the NCCL watchdog, and the process exits
  with an error. A rank that dies closes its connections (its peers fail at once) and torchrun
  stops the remaining workers of the job.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from ..tasks.base import IGNORE


@dataclass
class DistContext:
    """Where this process stands: ``world == 1`` is the plain single-process run."""

    rank: int = 0
    world: int = 1
    fsdp: bool = False
    owns_group: bool = False  # the trainer created the process group (and destroys it when done)

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_size() -> int:
    """Processes taking part: the initialised group's size, else ``WORLD_SIZE`` (torchrun), else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_batch(batch_size: int, world: int) -> int:
    """Per-rank batch of a global ``batch_size``; a clear error when it does not divide."""
    if batch_size % world:
        raise ValueError(
            f"batch_size {batch_size} is the global batch (per micro-batch) and must be divisible by "
            f"the number of processes ({world}); per-rank batch = batch_size / world"
        )
    return batch_size // world


def shard(indices: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This rank's contiguous slice of the global batch ``indices``."""
    if not ctx.active:
        return indices
    b = rank_batch(len(indices), ctx.world)
    return indices[ctx.rank * b : (ctx.rank + 1) * b]


def rank_seed(seed: int, rank: int) -> int:
    """Seed of rank ``rank``'s RNG (dropout): rank 0 keeps ``seed``, the others get their own streams."""
    return seed + 1_000_003 * rank


def setup(device: torch.device, *, fsdp: bool = False, timeout_s: float = 300.0) -> tuple[DistContext, torch.device]:
    """Join the process group torchrun describes (or use the caller's); returns the context and
    this rank's device (``cuda:LOCAL_RANK`` for an unindexed CUDA device)."""
    world = world_size()
    if world <= 1:
        return DistContext(), device
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend, timeout=timedelta(seconds=timeout_s), device_id=device if device.type == "cuda" else None
        )
    return DistContext(dist.get_rank(), dist.get_world_size(), fsdp, owns), device


def teardown(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


# --- wrapping -------------------------------------------------------------------------------------


def _layers(model: nn.Module) -> list[nn.Module]:
    """Elements of the outermost ``nn.ModuleList`` stacks (transformer blocks): the FSDP units."""
    units: list[nn.Module] = []
    for child in model.children():
        units.extend(child if isinstance(child, nn.ModuleList) else _layers(child))
    return units


@torch.no_grad()
def _broadcast_from_rank0(model: nn.Module, device: torch.device) -> None:
    """Give every rank rank 0's parameters and buffers (one tensor on ``device`` at a time)."""
    for t in list(model.parameters()) + list(model.buffers()):
        buf = t.detach().to(device)
        dist.broadcast(buf, src=0)
        t.copy_(buf)


def wrap(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """The module to run forward/backward through: ``model`` on ``device`` (single process), a DDP
    wrapper around it, or ``model`` itself sharded in place by FSDP2 (it stays sharded afterwards)."""
    if not ctx.active:
        return model.to(device)
    if not ctx.fsdp:
        model.to(device)
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    _broadcast_from_rank0(model, device)
    mesh = init_device_mesh(device.type, (ctx.world,))
    for layer in _layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)  # moves the shards to the mesh's device
    return model


def unwrap(net: nn.Module) -> nn.Module:
    """The user's model behind a DDP wrapper (FSDP2 modules are the model itself)."""
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net


def _is_fsdp(net: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(net, FSDPModule)


def grad_sync(net: nn.Module, ctx: DistContext, sync: bool):
    """Context for one micro-batch's forward + backward: gradients are reduced across ranks only on
    the last micro-batch of a step (``sync``), accumulated locally before."""
    if not ctx.active:
        return contextlib.nullcontext()
    if _is_fsdp(net):
        net.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()
    return contextlib.nullcontext() if sync else net.no_sync()


# --- loss and metrics --------------------------------------------------------------------------------


def global_mean(loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Rescale this rank's mean ``loss`` over its targets (those != IGNORE) by ``n_r * world / N``:
    averaged over ranks (as DDP/FSDP average gradients) it is the mean over the global batch."""
    if not ctx.active:
        return loss
    n_local = (targets != IGNORE).sum().reshape(1)
    n_total = n_local.clone()
    dist.all_reduce(n_total)
    n_local, n_total = int(n_local), int(n_total)
    if n_local == 0:  # nothing to learn here; keep every parameter in the graph
        return logits.sum() * 0.0
    return loss * (n_local * ctx.world / n_total)


def all_reduce_sum(values: list[float], ctx: DistContext, device: torch.device) -> list[float]:
    """Element-wise sum over ranks (float64)."""
    if not ctx.active:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def grad_norm_value(norm: torch.Tensor) -> float:
    """``clip_grad_norm_``'s total norm as a float (under FSDP it is a replicated DTensor)."""
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


# --- state: full state dicts on rank 0, loaded into any world size -----------------------------------


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _full(value: Any, keep: bool) -> Any:
    """A DTensor shard's full tensor on CPU (all-gather: every rank must call); others pass through."""
    if hasattr(value, "full_tensor"):
        full = value.full_tensor()
        return full.cpu() if keep else None
    return value


def full_model_state(net: nn.Module) -> dict | None:
    """The plain model state dict (as a single process saves it) on rank 0, None on the others.
    Collective under FSDP: every rank must call it."""
    main = _rank() == 0
    if _is_fsdp(net):
        state = {k: _full(v, main) for k, v in net.state_dict().items()}
        return state if main else None
    return unwrap(net).state_dict() if main else None


def full_optimizer_state(net: nn.Module, opt: torch.optim.Optimizer) -> dict | None:
    """The plain optimizer state dict on rank 0 (FSDP: shards gathered), None on the others."""
    main = _rank() == 0
    if _is_fsdp(net):
        osd = opt.state_dict()
        state = {i: {k: _full(v, main) for k, v in s.items()} for i, s in osd["state"].items()}
        return {"state": state, "param_groups": osd["param_groups"]} if main else None
    return opt.state_dict() if main else None


def load_optimizer_state(opt: torch.optim.Optimizer, state_dict: dict, net: nn.Module) -> None:
    """Load a plain (full) optimizer state dict; under FSDP each state tensor shaped like its
    parameter is cut to this rank's shard (locally: every rank read the same checkpoint)."""
    if _is_fsdp(net):
        from torch.distributed.tensor import distribute_tensor

        params = [p for g in opt.param_groups for p in g["params"]]

        def local(p, v):
            if not (torch.is_tensor(v) and hasattr(p, "device_mesh") and v.shape == p.shape):
                return v  # e.g. Adam's scalar step count
            return distribute_tensor(v.to(p.device), p.device_mesh, p.placements, src_data_rank=None)

        state = {i: {k: local(params[i], v) for k, v in s.items()} for i, s in state_dict["state"].items()}
        state_dict = {"state": state, "param_groups": state_dict["param_groups"]}
    opt.load_state_dict(state_dict)


def _rng_state() -> dict:
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def rng_states() -> list[dict] | None:
    """Every rank's RNG states (collective), or None for a single process."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return None
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, _rng_state())
    return out


def restore_rng(ckpt: dict, ctx: DistContext, seed: int) -> None:
    """Per-rank RNG states when the checkpoint has them for this world size; otherwise rank 0 takes
    the saved (rank 0) state and the other ranks start fresh streams derived from (seed, rank, step)."""
    ranks = ckpt.get("rng_ranks")
    if ranks is not None and len(ranks) == ctx.world:
        cpu, cuda = ranks[ctx.rank]["cpu"], ranks[ctx.rank]["cuda"]
    elif ctx.rank == 0:
        cpu, cuda = ckpt["rng_cpu"], ckpt["rng_cuda"]
    else:
        torch.manual_seed(rank_seed(seed, ctx.rank) + ckpt["step"])
        return
    torch.set_rng_state(cpu)
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save_model(net: nn.Module, directory, rebuild: Callable[[], nn.Module] | None) -> None:
    """Rank 0 saves the plain model with its ``save`` method. Under FSDP the full state is gathered
    (collective) and loaded into ``rebuild()``, a fresh unwrapped model of the same class."""
    if _is_fsdp(net):
        state = full_model_state(net)
        if state is not None and rebuild is not None:
            plain = rebuild()
            plain.load_state_dict(state)
            plain.save(directory)
    elif _rank() == 0:
        unwrap(net).save(directory)
