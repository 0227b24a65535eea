"""torch.distributed glue for data-parallel training launched with ``torchrun``.

The Learner calls ``setup`` when torchrun's environment says there are several processes: it
initialises the process group (NCCL on CUDA with one GPU per local rank, gloo on CPU), and the
Learner then shards its loaders and wraps the model in ``DistributedDataParallel``. Nothing here
runs a collective on an error path: a failing rank raises, torchrun ends the others.
"""

from __future__ import annotations

import atexit
import datetime
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler

__all__ = ["env_world", "setup", "wrap", "mark_fault", "all_reduce_sum", "mean_over_ranks", "gather_to_rank0",
           "shard_loader", "ShardSampler", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = float(os.environ.get("ONECYCLE_DIST_TIMEOUT", 60.0))  # seconds; short, so a lost rank fails fast


def env_world() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment (0, 0, 1 when absent)."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)))


def setup(timeout: float = DEFAULT_TIMEOUT) -> tuple[int, int, torch.device]:
    """Join (or create) the default process group; returns (rank, world_size, device)."""
    rank, local_rank, world = env_world()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout))
        atexit.register(_teardown)
    return dist.get_rank(), dist.get_world_size(), device


_faulted = False  # a fit raised on this rank: its peers may be mid-collective, so none at exit


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in ``DistributedDataParallel`` (one device per process on CUDA)."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def mark_fault() -> None:
    """Called when a fit raises under data-parallel training: no barrier at exit then."""
    global _faulted
    _faulted = True


def _gloo_busy() -> bool | None:
    """Whether a gloo worker thread of this process is running (None where /proc cannot say)."""
    tasks = Path("/proc/self/task")
    try:
        stats = [(t / "stat").read_text() for t in tasks.iterdir() if "gloo" in (t / "comm").read_text()]
    except OSError:
        return None
    return any(st[st.rindex(")") + 2] == "R" for st in stats)


def _teardown() -> None:
    """At exit, while the interpreter is still whole.

    A gloo worker thread releases each finished collective's tensors after the caller has been
    woken; when that is the last reference to a tensor Python made, it takes the GIL, and if the
    interpreter is shutting down by then the process aborts ("terminate called without an active
    exception"). DistributedDataParallel keeps the group (and so those threads) alive past
    ``destroy_process_group``. So after a clean run: a barrier (every rank done with its collectives
    before any closes its connections; never a collective after a fault), then a wait, GIL released,
    until the workers are idle."""
    if not dist.is_initialized():
        return
    if not _faulted and not hasattr(sys, "last_value"):
        try:
            dist.barrier()
        except Exception:  # a peer is gone: nothing left to wait for
            pass
    dist.destroy_process_group()
    deadline, quiet = time.monotonic() + 2.0, 0
    while quiet < 3 and time.monotonic() < deadline:
        time.sleep(0.002)
        busy = _gloo_busy()
        quiet = 0 if busy else quiet + 1  # three idle looks in a row (or 6 ms where /proc is absent)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks in place (returns ``t``); the identity when not distributed."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def mean_over_ranks(t: torch.Tensor, world_size: int) -> torch.Tensor:
    """The mean of ``t`` over data-parallel ranks (``t`` itself in one process)."""
    return all_reduce_sum(t.detach().clone()) / world_size if world_size > 1 else t


def gather_to_rank0(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` on rank 0 (None elsewhere); ``[obj]`` when not distributed."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` in order, without padding: for evaluation, where
    DistributedSampler's repeated samples would bias the reduced metrics."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.n, self.rank, self.world = n, rank, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


def shard_loader(dl: Any, rank: int, world: int, train: bool) -> Any:
    """This rank's share of ``dl``: a TensorLoader's own ``shard`` (each global batch split in
    contiguous pieces, so the global batches equal a one-process run with ``world`` times the
    batch), or a DataLoader rebuilt with a DistributedSampler (train) / ShardSampler (eval)."""
    if dl is None or world == 1:
        return dl
    if callable(getattr(dl, "shard", None)):
        return dl.shard(rank, world, drop_last=dl.drop_last) if train else dl.shard(rank, world, drop_last=False)
    if not isinstance(dl, DataLoader):
        raise TypeError(f"cannot shard a {type(dl).__name__} for data-parallel training: pass a DataLoader, a "
                        "TensorLoader, or a loader with a shard(rank, world_size) method")
    if train:
        sampler: Sampler = DistributedSampler(dl.dataset, num_replicas=world, rank=rank,
                                              shuffle=isinstance(dl.sampler, RandomSampler), drop_last=dl.drop_last)
    else:
        sampler = ShardSampler(len(dl.dataset), rank, world)
    return DataLoader(dl.dataset, batch_size=dl.batch_size, sampler=sampler, num_workers=dl.num_workers,
                      collate_fn=dl.collate_fn, pin_memory=dl.pin_memory, drop_last=dl.drop_last,
                      worker_init_fn=dl.worker_init_fn, persistent_workers=dl.persistent_workers)
