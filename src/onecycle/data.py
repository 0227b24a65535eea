"""Data: a lean in-memory loader, a truncated-BPTT loader, and offline built-in tasks.

``TensorLoader`` gathers the whole dataset once per epoch and yields contiguous slices, so a batch
costs a few tensor views instead of per-sample indexing and collation; its order matches
``DataLoader(TensorDataset(...), shuffle=True, generator=torch.Generator().manual_seed(seed))`` bit for
bit. ``load_task(name)`` builds a ``Task`` (loaders, loss, metrics, shapes, default model) from data
generated or read locally and cached as ``.npz`` under ``cache_dir()``; nothing is downloaded.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import io
import json
import os
import platform
import random
import sysconfig
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .atomic import atomic_write_bytes
from .checks import check_bool, check_int
from .metrics import accuracy, bits_per_char

__all__ = [
    "TensorLoader", "LMLoader", "Task", "TASKS", "load_task", "cache_dir", "cached_arrays",
    "cross_entropy", "sequence_cross_entropy", "mnist1d_task", "mnist1d_large_task", "digits_task",
    "charlm_task", "UNKNOWN", "place_on_device", "place_loaders", "same_device",
]

Device = torch.device | str | None
EVAL_CHUNK_BYTES = 64 << 10  # TensorLoader.eval_batches: data per forward pass without gradients


def _as_tensor(data: object, name: str, device: Device) -> torch.Tensor:
    """A torch tensor on ``device`` (numpy arrays are converted once, sharing memory when possible)."""
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(np.ascontiguousarray(data))
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(data).__name__}")
    return data if device is None else data.to(device)


# ----------------------------------------------------------------------------------------------
# TensorLoader
# ----------------------------------------------------------------------------------------------

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
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
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
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
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
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an int in [0, {world_size}), got {rank!r}")
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
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
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


# ----------------------------------------------------------------------------------------------
# Task contract and cache
# ----------------------------------------------------------------------------------------------

@dataclass
class Task:
    """What a training run needs from a task; a user's ``--task package.module:function`` returns one.

    ``in_shape`` is one sample's input shape, ``n_out`` the number of classes or vocabulary size,
    ``default_model`` a name in ``onecycle.models.MODELS`` (ignored when ``model`` is given), and
    ``info`` free-form extras (e.g. the character-LM vocabulary).
    """

    name: str
    train_dl: Iterable
    valid_dl: Iterable
    loss_fn: Callable
    metrics: list
    in_shape: tuple
    n_out: int
    default_model: str
    model: nn.Module | None = None
    info: dict = field(default_factory=dict)


def cross_entropy(preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of (B, C) logits against (B,) class ids."""
    return F.cross_entropy(preds, targets)


def sequence_cross_entropy(preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of (B, T, V) logits against (B, T) ids, over all B*T positions."""
    return F.cross_entropy(preds.reshape(-1, preds.shape[-1]), targets.reshape(-1))


_CACHE_VERSION = 1


def cache_dir() -> Path:
    """``$ONECYCLE_CACHE``, else ``$XDG_CACHE_HOME/onecycle``, else ``~/.cache/onecycle``."""
    if os.environ.get("ONECYCLE_CACHE"):
        return Path(os.environ["ONECYCLE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "onecycle"


def _cache_path(task: str, options: dict) -> Path:
    key = json.dumps({"task": task, "version": _CACHE_VERSION, **options}, sort_keys=True)
    return cache_dir() / f"{task}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def _save_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """The arrays as one .npz, written atomically (readers never see half a file); a cache that
    cannot be written is a warning, not an error."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        atomic_write_bytes(path, buf.getvalue(), mode=0o644)  # plain shareable data
    except OSError as err:
        warnings.warn(f"could not write the data cache {path}: {err}", stacklevel=3)


def cached_arrays(task: str, options: dict, build: Callable[[], dict[str, np.ndarray]]
                  ) -> dict[str, np.ndarray]:
    """``build()``'s arrays, read from the cache when ``task`` was built with the same ``options``
    (JSON-able) before, else built and saved. An unreadable cache file is rebuilt."""
    path = _cache_path(task, options)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        pass
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        warnings.warn(f"rebuilding unreadable data cache {path}: {err}", stacklevel=2)
    arrays = build()
    _save_atomic(path, arrays)
    return arrays


def _optional(module: str, task: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = module.split(".")[0]
        raise ImportError(f"task {task!r} needs {package}: pip install 'onecycle[data]'") from err


# ----------------------------------------------------------------------------------------------
# Classification tasks
# ----------------------------------------------------------------------------------------------

def _classification(name: str, arrays: dict[str, np.ndarray], sample_shape: tuple, n_out: int,
                    default_model: str, batch_size: int, seed: int, device: Device) -> Task:
    x, xv = (torch.from_numpy(arrays[k]).reshape(-1, *sample_shape) for k in ("x", "x_valid"))
    train = TensorLoader(x, arrays["y"], batch_size=batch_size, shuffle=True, seed=seed, device=device)
    valid = TensorLoader(xv, arrays["y_valid"], batch_size=batch_size, device=device)
    return Task(name, train, valid, cross_entropy, [accuracy], sample_shape, n_out, default_model,
                info={"n_train": train.n, "n_valid": valid.n})


def _mnist1d_arrays(num_samples: int) -> dict[str, np.ndarray]:
    """MNIST-1D with the published generator defaults (seed 42 included) except ``num_samples``.
    The generator reseeds Python's and numpy's global RNGs, so their states are restored after."""
    mdata = _optional("mnist1d.data", "mnist1d")
    args = mdata.get_dataset_args()
    args.num_samples = num_samples
    saved = random.getstate(), np.random.get_state()
    try:
        ds = mdata.make_dataset(args)
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
    return {"x": ds["x"].astype(np.float32), "y": ds["y"].astype(np.int64),
            "x_valid": ds["x_test"].astype(np.float32), "y_valid": ds["y_test"].astype(np.int64)}


def mnist1d_task(batch_size: int | None = None, seed: int = 0, device: Device = None,
                 num_samples: int = 5000, name: str = "mnist1d") -> Task:
    """MNIST-1D (Greydanus 2020): 4000 train / 1000 test signals of shape (1, 40), 10 classes.
    ``seed`` only changes the training shuffle; the data is always the published set."""
    check_int("num_samples", num_samples, 1)
    arrays = cached_arrays(name, {"num_samples": num_samples}, lambda: _mnist1d_arrays(num_samples))
    return _classification(name, arrays, (1, arrays["x"].shape[-1]), 10, "cnn", batch_size or 128,
                           seed, device)


def mnist1d_large_task(batch_size: int | None = None, seed: int = 0, device: Device = None) -> Task:
    """MNIST-1D generated with 50000 samples: 40000 train / 10000 test."""
    return mnist1d_task(batch_size, seed, device, num_samples=50_000, name="mnist1d_large")


def _digits_arrays() -> dict[str, np.ndarray]:
    datasets = _optional("sklearn.datasets", "digits")
    selection = _optional("sklearn.model_selection", "digits")
    bunch = datasets.load_digits()
    x, y = (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64)
    xt, xv, yt, yv = selection.train_test_split(x, y, test_size=360, random_state=0, stratify=y)
    return {k: np.ascontiguousarray(v) for k, v in zip(("x", "x_valid", "y", "y_valid"), (xt, xv, yt, yv),
                                                       strict=True)}


def digits_task(batch_size: int | None = None, seed: int = 0, device: Device = None) -> Task:
    """scikit-learn's 8x8 digits, scaled to [0, 1]: stratified 1437 train / 360 test, 10 classes."""
    arrays = cached_arrays("digits", {}, _digits_arrays)
    return _classification("digits", arrays, (64,), 10, "mlp", batch_size or 64, seed, device)


# ----------------------------------------------------------------------------------------------
# Character-level language model over the standard library's sources
# ----------------------------------------------------------------------------------------------

_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
UNKNOWN = "\ufffd"  # id 0 of the character vocabulary: rare and non-ASCII characters


def _stdlib_files(root: Path) -> list[Path]:
    """The standard library's ``.py`` files sorted by relative path, without tests or third-party
    packages: a corpus every Python install has, so the task needs no download."""
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.startswith(".")]
        files += [Path(folder, f) for f in names if f.endswith(".py") and not f.startswith("test_")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _charlm_sources(root: Path, train_chars: int, valid_chars: int, valid_every: int
                    ) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """(path, text) pairs for each split: every ``valid_every``-th file (1-based) goes to validation,
    the rest to training, each split taking files in order until its character budget is met."""
    splits: tuple[list, list] = ([], [])
    sizes, budgets = [0, 0], (train_chars, valid_chars)
    for i, path in enumerate(_stdlib_files(root)):
        split = int(i % valid_every == valid_every - 1)
        if sizes[split] < budgets[split]:
            text = path.read_text(encoding="utf-8", errors="replace")
            splits[split].append((path, text))
            sizes[split] += len(text)
        if sizes[0] >= train_chars and sizes[1] >= valid_chars:
            break
    return splits


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def _charlm_arrays(root: Path, train_chars: int, valid_chars: int, valid_every: int, min_count: int
                   ) -> dict[str, np.ndarray]:
    """Token ids (uint8) for both splits and the vocabulary's code points (id 0 = unknown): the
    ASCII characters seen at least ``min_count`` times in the training text, sorted."""
    train_files, valid_files = _charlm_sources(root, train_chars, valid_chars, valid_every)
    train = _codes("".join(text for _, text in train_files)[:train_chars])
    valid = _codes("".join(text for _, text in valid_files)[:valid_chars])
    counts = np.bincount(train[train < 128], minlength=128)
    kept = np.flatnonzero(counts >= min_count)
    lookup = np.zeros(128, dtype=np.uint8)
    lookup[kept] = np.arange(1, len(kept) + 1, dtype=np.uint8)

    def encode(codes: np.ndarray) -> np.ndarray:
        return np.where(codes < 128, lookup[np.minimum(codes, 127)], 0).astype(np.uint8)

    vocab = np.concatenate([[ord(UNKNOWN)], kept]).astype(np.int32)
    return {"train": encode(train), "valid": encode(valid), "vocab": vocab}


def charlm_task(batch_size: int | None = None, seed: int = 0, device: Device = None, bptt: int = 64,
                train_chars: int = 1_000_000, valid_chars: int = 100_000, valid_every: int = 10,
                min_count: int = 5) -> Task:
    """Character-level language modelling of the standard library's Python sources, split by file.
    Batches are (batch_size, bptt) windows in stream order (``seed`` is unused: no shuffling);
    ``info["vocab"]`` is the id-to-character string."""
    for value, arg in ((bptt, "bptt"), (train_chars, "train_chars"), (valid_chars, "valid_chars"),
                       (valid_every, "valid_every"), (min_count, "min_count")):
        check_int(arg, value, 1)
    if valid_every < 2:
        raise ValueError(f"valid_every must be at least 2, got {valid_every!r}")
    root = Path(sysconfig.get_paths()["stdlib"])
    options = {"train_chars": train_chars, "valid_chars": valid_chars, "valid_every": valid_every,
               "min_count": min_count, "stdlib": str(root), "python": platform.python_version()}
    arrays = cached_arrays("charlm", options, lambda: _charlm_arrays(root, train_chars, valid_chars,
                                                                     valid_every, min_count))
    bs = batch_size or 32
    train = LMLoader(arrays["train"], bs, bptt, device)
    valid = LMLoader(arrays["valid"], bs, bptt, device)
    vocab = "".join(map(chr, arrays["vocab"].tolist()))
    return Task("charlm", train, valid, sequence_cross_entropy, [bits_per_char, accuracy], (bptt,),
                len(vocab), "lstm", info={"vocab": vocab, "n_train": train.n, "n_valid": valid.n})


TASKS: dict[str, Callable[..., Task]] = {
    "mnist1d": mnist1d_task,
    "mnist1d_large": mnist1d_large_task,
    "digits": digits_task,
    "charlm": charlm_task,
}


def load_task(name: str, batch_size: int | None = None, seed: int = 0, device: Device = None,
              **options) -> Task:
    """Build the built-in task ``name`` (see ``TASKS``); ``batch_size`` None keeps the task's default,
    ``seed`` sets the training shuffle, ``device`` where the data lives, ``options`` go to the
    builder (e.g. ``bptt=128`` for charlm)."""
    if name not in TASKS:
        raise ValueError(f"name must be one of {sorted(TASKS)}, got {name!r}")
    if batch_size is not None:
        check_int("batch_size", batch_size, 1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return TASKS[name](batch_size=batch_size, seed=seed, device=device, **options)
