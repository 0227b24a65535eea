"""Loaders: a lean in-memory loader, a truncated-BPTT loader, and putting their data on a device.

``TensorLoader`` gathers the whole dataset once per epoch and yields contiguous slices, so a batch
costs a few tensor views instead of per-sample indexing and collation; its order matches
``DataLoader(TensorDataset(...), shuffle=True, generator=torch.Generator().manual_seed(seed))`` bit for
bit. ``LMLoader`` cuts one token stream into truncated-BPTT windows. ``place_loaders`` moves an
in-memory loader's data onto the GPU once, when it fits. The built-in tasks that use these loaders
are in ``tasks.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from .checks import check_bool, check_int

__all__ = ["TensorLoader", "LMLoader", "Device", "place_on_device", "place_loaders", "same_device"]

Device = torch.device | str | None
EVAL_CHUNK_BYTES = 64 << 10  # TensorLoader.eval_batches: data per forward pass without gradients


def _as_tensor(data: object, name: str, device: Device) -> torch.Tensor:
    """A torch tensor on ``device`` (numpy arrays are converted once, sharing memory when possible)."""
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(np.ascontiguousarray(data))
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(data).__name__}")
    return data if device is None else data.to(device)


# ---- TensorLoader ------------------------------------------------------------------------------

def _draw_epoch(gen: torch.Generator, n: int) -> torch.Tensor:
    """The draws one full pass of a shuffling DataLoader takes from its generator, in order: the
    iterator's base seed (one int64), RandomSampler's permutation, and a second permutation that
    RandomSampler computes (and slices to nothing) when asked for samples after the first ``n``."""
    torch.empty((), dtype=torch.int64).random_(generator=gen)
    perm = torch.randperm(n, generator=gen)
    torch.randperm(n, generator=gen)
    return perm


class TensorLoader:
    """Batches of in-memory tensors sharing their first dimension, yielded as tuples.

    Each epoch draws one permutation, gathers every tensor once (``t[perm]``) and yields contiguous
    slices of the gathered copy. Epoch ``e`` has exactly the batches of the ``e``-th pass over
    ``DataLoader(TensorDataset(*tensors), batch_size, shuffle, drop_last=drop_last,
    generator=torch.Generator().manual_seed(seed))``. The permutation is drawn on the CPU generator
    (then moved) so the order is the same on every device. The gathered copy costs one extra copy
    of the data in memory for the duration of the epoch. Batches are views (of that copy, or of the
    stored tensors when not shuffling): modify them out of place, not in place.

    ``epoch`` is the epoch the next ``iter()`` yields: each ``iter()`` takes it and adds one, as a
    DataLoader advances its generator; ``set_epoch(e)`` makes the next pass epoch ``e`` (any order of
    epochs is reproducible; the generator state after the latest epoch is cached, so going forward
    costs one epoch's draws per epoch). ``drop_last=True`` with fewer samples than one batch raises,
    since a loader with no batches is almost certainly a mistake.
    """

    def __init__(self, *tensors: torch.Tensor | np.ndarray, batch_size: int = 128, shuffle: bool = False,
                 drop_last: bool = False, seed: int = 0, device: Device = None) -> None:
        if not tensors:
            raise ValueError("TensorLoader needs at least one tensor, got none")
        data = tuple(_as_tensor(t, f"tensors[{i}]", device) for i, t in enumerate(tensors))
        n = data[0].shape[0] if data[0].ndim else 0
        for i, t in enumerate(data):
            if t.ndim == 0 or t.shape[0] != n:
                raise ValueError(f"tensors[{i}] has shape {tuple(t.shape)}; all tensors need first dim {n}")
        if n == 0:
            raise ValueError("tensors must hold at least one sample, got 0")
        check_int("seed", seed)
        self.tensors, self.n, self.seed = data, n, seed
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.shuffle = check_bool("shuffle", shuffle)
        self.drop_last = check_bool("drop_last", drop_last)
        self.rank, self.world_size, self.epoch = 0, 1, 0
        self._gen = torch.Generator()
        self._gen.manual_seed(seed)
        self._state_epoch, self._state = 0, self._gen.get_state()
        self._check_nonempty()

    def to(self, device: Device) -> TensorLoader:
        """Move the data to ``device``, in place (as ``Module.to``); returns the loader."""
        self.tensors = tuple(t.to(device) for t in self.tensors)
        return self

    def _check_nonempty(self) -> None:
        if len(self) == 0:
            raise ValueError(f"drop_last=True with {self.n} samples and a global batch of "
                             f"{self.batch_size * self.world_size} leaves no batch")

    def __len__(self) -> int:
        size = self.batch_size * self.world_size
        return self.n // size if self.drop_last else -(-self.n // size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass yield epoch ``epoch`` (0-based)."""
        check_int("epoch", epoch, 0)
        self.epoch = epoch

    def _permutation(self, epoch: int) -> torch.Tensor:
        """Epoch ``epoch``'s order, from the cached generator state (re-seeded when going back)."""
        if epoch < self._state_epoch:
            self._gen.manual_seed(self.seed)
            self._state_epoch, self._state = 0, self._gen.get_state()
        self._gen.set_state(self._state)
        for _ in range(epoch - self._state_epoch):
            _draw_epoch(self._gen, self.n)
        perm = _draw_epoch(self._gen, self.n)
        self._state_epoch, self._state = epoch + 1, self._gen.get_state()
        return perm

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        data = self.tensors
        if self.shuffle:
            perm, moved = self._permutation(epoch), {}
            for t in data:
                if t.device not in moved:
                    moved[t.device] = perm.to(t.device, non_blocking=True)
            data = tuple(t.index_select(0, moved[t.device]) for t in data)
        return self._slices(data)

    def _slices(self, data: tuple[torch.Tensor, ...]) -> Iterator[tuple[torch.Tensor, ...]]:
        bs, rank, world = self.batch_size, self.rank, self.world_size
        size = bs * world
        full = self.n // size
        for i in range(full):
            start = i * size + rank * bs
            yield tuple(t[start:start + bs] for t in data)
        rest = self.n - full * size
        if rest and not self.drop_last:  # split the partial global batch as evenly as possible
            base, extra = divmod(rest, world)
            start = full * size + rank * base + min(rank, extra)
            stop = start + base + (rank < extra)
            yield tuple(t[start:stop] for t in data)

    def eval_batches(self) -> Iterable[tuple[torch.Tensor, ...]]:
        """The batches to evaluate on (``Learner.validate``): one pass in chunks of up to
        ``EVAL_CHUNK_BYTES`` of data and 4 batches (never fewer rows than a batch). Without gradients a
        bigger chunk costs less than several batches and sums to the same loss and metrics, up to
        float rounding (MNIST-1D's 1000 test signals with the CNN: 2.2 ms in chunks of 390, 3.6 ms in
        batches of 128; one chunk of 1000 is slower again, 3.2 ms, as its activations outgrow the
        cache). Shuffling, ``drop_last`` or sharded loaders yield their usual batches. Metrics
        computed per batch and averaged (rather than summed over samples) see bigger batches."""
        if self.shuffle or self.drop_last or self.world_size != 1:
            return self
        row_bytes = sum(t[0].numel() * t.element_size() for t in self.tensors)
        rows = max(self.batch_size, min(4 * self.batch_size, EVAL_CHUNK_BYTES // max(row_bytes, 1)))
        if rows <= self.batch_size:
            return self
        self.epoch += 1  # a pass, as iter() counts it
        return (tuple(t[i:i + rows] for t in self.tensors) for i in range(0, self.n, rows))

    def shard(self, rank: int, world_size: int, drop_last: bool = True) -> TensorLoader:
        """This loader's view for data-parallel rank ``rank`` of ``world_size`` (same data, seed and
        epoch). Each global batch is ``batch_size * world_size`` consecutive samples of the global
        order, cut into contiguous per-rank pieces, rank r taking piece r: the ranks together see
        exactly what one process with batch ``batch_size * world_size`` sees per step.

        ``drop_last`` defaults to True so every rank gets full, equal batches. With False the last
        partial global batch is split as evenly as possible (piece sizes differ by at most one);
        when it holds fewer samples than ``world_size``, some ranks get an empty batch (still
        yielded, so all ranks take the same number of steps).
        """
        check_int("world_size", world_size, 1)
        check_int("rank", rank, 0, world_size - 1)
        if self.world_size != 1:
            raise ValueError(f"shard a single-process loader, not one already sharded (world_size "
                             f"{self.world_size})")
        other = copy.copy(self)
        other.rank, other.world_size = rank, world_size
        other.drop_last = check_bool("drop_last", drop_last)
        other._gen = torch.Generator()  # the cached state (an immutable snapshot) is shared
        other._check_nonempty()
        return other


class LMLoader:
    """Truncated-BPTT batches from one token stream, in order (no shuffling across windows).

    The stream is cut into ``batch_size`` equal contiguous rows, a (batch_size, L) array; batch i is
    columns ``[i*bptt, (i+1)*bptt)`` as input and the same shifted by one as targets, so row r of
    consecutive batches continues the same text and a model can carry its hidden state across
    batches. The last window may be shorter. ``set_epoch`` only records the epoch (same order).
    """

    def __init__(self, ids: torch.Tensor | np.ndarray, batch_size: int = 32, bptt: int = 64,
                 device: Device = None) -> None:
        stream = _as_tensor(ids, "ids", device)
        integer = not (stream.is_floating_point() or stream.is_complex() or stream.dtype == torch.bool)
        if stream.ndim != 1 or not integer:
            raise ValueError(f"ids must be a 1-d integer sequence, got {stream.dtype} of shape "
                             f"{tuple(stream.shape)}")
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.bptt = check_int("bptt", bptt, 1)
        cols = stream.numel() // batch_size
        if cols < 2:
            raise ValueError(f"ids holds {stream.numel()} tokens: fewer than 2 per row for "
                             f"batch_size={batch_size}")
        self.data = stream[: batch_size * cols].long().view(batch_size, cols)
        self.n, self.epoch = batch_size * cols, 0

    def to(self, device: Device) -> LMLoader:
        """Move the token rows to ``device``, in place (as ``Module.to``); returns the loader."""
        self.data = self.data.to(device)
        return self

    def __len__(self) -> int:
        return -(-(self.data.shape[1] - 1) // self.bptt)

    def set_epoch(self, epoch: int) -> None:
        """Record the epoch (kept for the loader protocol; the order never changes)."""
        check_int("epoch", epoch, 0)
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.epoch += 1
        return self._windows()

    def _windows(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        cols = self.data.shape[1]
        for start in range(0, cols - 1, self.bptt):
            size = min(self.bptt, cols - 1 - start)
            yield self.data[:, start:start + size], self.data[:, start + 1:start + 1 + size]


def _device_tensors(loader: object) -> tuple[torch.Tensor, ...] | None:
    if isinstance(loader, TensorLoader):
        return loader.tensors
    if isinstance(loader, LMLoader):
        return (loader.data,)
    return None


def _free_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` (CUDA); None where it cannot be known."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return None


def place_on_device(loader: object, device: Device) -> bool:
    """Put an in-memory loader's data (``TensorLoader``, ``LMLoader``) on ``device`` once, in place,
    when it fits: its bytes, doubled for a shuffling loader (each epoch gathers a shuffled copy),
    within half the device's free memory (CUDA; elsewhere the free memory is unknown and nothing
    moves). The Learner does this for its training and validation loaders together at every fit on
    a GPU, so batches need no copy; data that does not fit stays where it is and is copied batch by
    batch. Other loaders are left alone. Returns whether the data is now on ``device``."""
    place_loaders((loader,), device)
    tensors = _device_tensors(loader)
    return tensors is not None and all(same_device(t.device, torch.device(device)) for t in tensors)


def place_loaders(loaders: Iterable[object], device: Device) -> None:
    """``place_on_device`` for several loaders with one budget: together (the shuffling ones doubled)
    within half the free memory measured before the first moves, in order, each that still fits."""
    device, free, spent, seen = torch.device(device), None, 0, set()
    for loader in loaders:
        tensors = _device_tensors(loader)
        if tensors is None or id(loader) in seen or all(same_device(t.device, device) for t in tensors):
            continue
        seen.add(id(loader))
        need = sum(t.numel() * t.element_size() for t in tensors) * (2 if getattr(loader, "shuffle", False) else 1)
        free = _free_bytes(device) if free is None else free
        if free is None:
            return
        if spent + need <= free // 2:
            loader.to(device)  # type: ignore[attr-defined]
            spent += need


def same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:0`` are the same device when 0 is the current one."""
    if a.type != b.type:
        return False
    if a.index is None or b.index is None:
        index = torch.cuda.current_device() if a.type == "cuda" else 0
        return (a.index if a.index is not None else index) == (b.index if b.index is not None else index)
    return a.index == b.index
