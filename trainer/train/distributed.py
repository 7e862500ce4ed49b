"""Multi-process training helpers on PyTorch's own machinery (torchrun + torch.distributed + DDP).

``torchrun --nproc_per_node=N main.py train ...`` starts N processes; each gets RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR / MASTER_PORT from torchrun and builds a :class:`trainer.train.engine.Trainer` with ``rank`` and
``world_size``. The Trainer calls :func:`init` (gloo on CPU, NCCL on CUDA, with a timeout so a dead rank cannot
hang the others forever), trains with DistributedDataParallel, and gathers every rank's embeddings with
:func:`gather_batch` before mining, so that each rank mines the GLOBAL batch exactly as a single process would.
After each epoch every rank embeds its :func:`shard` of the images, :func:`gather_rows` collects them on rank 0,
and rank 0 alone evaluates and writes the run.
No Qt here.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from trainer.errors import ExplorerError

BACKEND_ENV = "EMBEDDING_EXPLORER_DIST_BACKEND"  # force gloo (or nccl) instead of the device's default
DIST_FILE = "distributed.json"  # side file in the run: world size and backend it was trained with
TIMEOUT_ENV = "EE_DIST_TIMEOUT_S"  # seconds a collective (or barrier) may wait for a peer
DEFAULT_TIMEOUT_S = 1800.0


class DistributedError(ExplorerError):
    """A distributed set-up problem the user can act on; the message says what."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.world_size > 1


def timeout_seconds() -> float:
    """The collective timeout: ``$EE_DIST_TIMEOUT_S`` or 30 minutes (rank 0 evaluates while the others wait)."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise DistributedError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if not value > 0:
        raise DistributedError(f"{TIMEOUT_ENV} must be positive, got {raw!r}")
    return value


def init(rank: int, world_size: int, device: torch.device) -> DistInfo:
    """Join the process group when ``world_size > 1`` (gloo for CPU, NCCL for CUDA); a no-op otherwise."""
    if world_size <= 1:
        return DistInfo()
    if not 0 <= rank < world_size:
        raise DistributedError(f"rank {rank} is outside world size {world_size}")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise DistributedError(
            f"WORLD_SIZE={world_size} but {', '.join(missing)} not set: start distributed training with "
            f"`torchrun --nproc_per_node=N main.py train ...` (it sets them), not by setting WORLD_SIZE by hand")
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    forced = os.environ.get(BACKEND_ENV, "").strip().lower()
    if forced and forced not in ("gloo", "nccl"):
        raise DistributedError(f"{BACKEND_ENV}={forced!r}: use gloo or nccl")
    if device.type == "cuda":
        # gloo on CUDA: several processes on one GPU (NCCL refuses two ranks on one device), as bench/gpu_check.sh
        # runs it
        backend = forced or "nccl"
        torch.cuda.set_device(local_rank if backend == "nccl" else local_rank % torch.cuda.device_count())
    elif device.type == "cpu":
        if forced == "nccl":
            raise DistributedError("NCCL needs CUDA devices; on the CPU the backend is gloo")
        backend = "gloo"
    else:
        raise DistributedError(f"distributed training runs on CPU (gloo) or CUDA (NCCL), not on {device.type}")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                timeout=_dt.timedelta(seconds=timeout_seconds()))
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend)


def local_device(device: torch.device, info: DistInfo) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` for CUDA jobs, the given device otherwise."""
    if info.active and device.type == "cuda":
        return torch.device("cuda", info.local_rank % max(1, torch.cuda.device_count()))
    return device


def shutdown() -> None:
    """Leave the process group if this process is in one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process); times out after :func:`timeout_seconds`."""
    if info.active:
        dist.barrier()


def _row_counts(rows: torch.Tensor, info: DistInfo) -> list[int]:
    """How many rows each rank holds (a collective: every rank calls it)."""
    n_local = torch.tensor([rows.shape[0]], dtype=torch.int64, device=rows.device)
    sizes = [torch.zeros_like(n_local) for _ in range(info.world_size)]
    dist.all_gather(sizes, n_local)
    return [int(v.item()) for v in sizes]


def gather_batch(emb: torch.Tensor, ids: torch.Tensor, order: torch.Tensor,
                 info: DistInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's (embeddings, sample ids) concatenated and sorted by ``order`` (position in the global batch).

    Gradients flow back to each rank's own rows (:class:`_AllGatherGrad`: its backward sums the gradient every rank
    computed for those rows). Since every rank computes the same loss of the same global
    batch, each local row receives ``world_size`` times its gradient, and DDP's averaging over ranks divides that
    out again: the update equals a single process on the global batch. Ranks may hold different numbers of rows
    (classes per batch not a multiple of the world size): rows are padded to the largest rank and dropped again.
    """
    if not info.active:
        perm = torch.argsort(order.to(emb.device))
        return emb[perm], ids.to(emb.device)[perm]
    dev = emb.device
    sizes_i = _row_counts(emb, info)
    pad = max(sizes_i) - emb.shape[0]
    emb_p = torch.nn.functional.pad(emb, (0, 0, 0, pad)) if pad else emb
    meta = torch.stack([ids.to(dev, torch.int64), order.to(dev, torch.int64)], dim=1)
    meta_p = torch.nn.functional.pad(meta, (0, 0, 0, pad), value=-1) if pad else meta
    parts = _AllGatherGrad.apply(emb_p.contiguous())
    meta_parts = [torch.empty_like(meta_p) for _ in range(info.world_size)]
    dist.all_gather(meta_parts, meta_p.contiguous())
    emb_all = torch.cat([p[:n] for p, n in zip(parts, sizes_i)])
    meta_all = torch.cat([m[:n] for m, n in zip(meta_parts, sizes_i)])
    perm = torch.argsort(meta_all[:, 1])
    return emb_all[perm], meta_all[perm, 0]


class _AllGatherGrad(torch.autograd.Function):
    """all_gather whose backward all-reduces (sums) the incoming gradients and keeps this rank's slice.

    torch.distributed.nn.functional.all_gather does the same but is deprecated in torch 2.14 and needs alltoall
    on gloo; all_reduce is available on every backend.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x)
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        g = torch.stack([gr.contiguous() for gr in grads])
        dist.all_reduce(g)
        return g[dist.get_rank()]


def shard(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows [lo, hi) of ``n`` that ``rank`` embeds: contiguous blocks whose sizes differ by at most one."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    return n * rank // world_size, n * (rank + 1) // world_size


def gather_rows(local: torch.Tensor, info: DistInfo) -> torch.Tensor | None:
    """Every rank's block of rows (from :func:`shard`) concatenated in rank order on rank 0; None on the others.

    Blocks may differ in length by one row: each is padded to the longest, gathered, and trimmed again. NCCL
    needs the rows on this rank's GPU; gloo takes them on the CPU."""
    if not info.active:
        return local
    sizes_i = _row_counts(local, info)
    top = max(sizes_i)
    padded = torch.nn.functional.pad(local, (0, 0, 0, top - local.shape[0])) if top > local.shape[0] else local
    parts = [torch.empty_like(padded) for _ in range(info.world_size)]
    dist.all_gather(parts, padded.contiguous())
    if info.rank != 0:
        return None
    return torch.cat([p[:k] for p, k in zip(parts, sizes_i)])


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics) before they embed their shares.

    Without SyncBatchNorm (CPU) each rank's last training step updated the running statistics from its own rows,
    so the ranks' copies differ slightly; the stored embeddings must be those of rank 0's network."""
    if not info.active:
        return
    for b in module.buffers():
        dist.broadcast(b.data, src=0)


def average_gradients(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """All-reduce (mean) the gradients of parameters DDP does not own (proxies, classifier weights), in one call."""
    if not info.active:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= info.world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def wrap_model(module: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around ``module`` (SyncBatchNorm is applied by the caller on CUDA)."""
    if not info.active:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(module, device_ids=ids)  # buffers (BN running stats) follow rank 0's at each forward


def batch_order(rank: int, world_size: int, n_rows: int, per_class: int) -> torch.Tensor:
    """Position in the global batch of each of this rank's rows (the sampler gives rank r class blocks r, r+W, ...)."""
    block = torch.arange(n_rows) // per_class
    within = torch.arange(n_rows) % per_class
    return (rank + block * world_size) * per_class + within


def record_world_size(info: DistInfo, writer) -> None:
    """Record the world size and backend in the run (``distributed.json``) so a resume can check it."""
    writer.save_json(DIST_FILE, {"world_size": int(info.world_size), "backend": info.backend})


def recorded_world_size(run_dir: Path | str) -> int:
    """The world size a run was trained with (1 for runs without the side file)."""
    path = Path(run_dir) / DIST_FILE
    if not path.is_file():
        return 1
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["world_size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DistributedError(f"{path} is damaged ({type(exc).__name__}: {exc}); cannot tell the world size "
                               f"this run was trained with") from None


def check_resume_world_size(run_dir: Path | str, world_size: int) -> None:
    """Refuse to resume a run with another number of processes than it was trained with, saying how to run it."""
    saved = recorded_world_size(run_dir)
    if saved != world_size:
        how = ("python main.py train ... --resume" if saved == 1
               else f"torchrun --nproc_per_node=... (total {saved} processes) main.py train ... --resume")
        raise DistributedError(
            f"cannot resume {run_dir}: it was trained with {saved} process(es) and this start has {world_size}. "
            f"The per-rank batch split, the BatchNorm statistics and the batches per epoch depend on the world "
            f"size, so resuming with another one would not continue the same run. Resume it with: {how}")
