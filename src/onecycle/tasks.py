"""Built-in tasks: what a run needs from a task (``Task``), the offline tasks (MNIST-1D, scikit-learn's
digits, a character LM over the standard library's sources), their loss functions and their cache.

``load_task(name)`` builds a ``Task`` (loaders, loss, metrics, shapes, default model) from data
generated or read locally and cached as ``.npz`` under ``cache_dir()``; nothing is downloaded. A
user's ``--task package.module:function`` returns a ``Task`` too.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import random
import sysconfig
import warnings
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .atomic import atomic_write_bytes
from .checks import check_int, import_extra
from .data import Device, LMLoader, TensorLoader
from .metrics import accuracy, bits_per_char

__all__ = ["Task", "TASKS", "load_task", "cache_dir", "cached_arrays", "cross_entropy", "sequence_cross_entropy",
           "mnist1d_task", "mnist1d_large_task", "digits_task", "charlm_task", "UNKNOWN"]


# ---- the task contract and the cache ----------------------------------------------------------
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
    return import_extra(module, "data", f"task {task!r} needs {module.split('.')[0]}")


# ---- classification tasks ---------------------------------------------------------------------
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


# ---- a character-level language model over the standard library's sources ----------------------
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
    check_int("seed", seed)
    return TASKS[name](batch_size=batch_size, seed=seed, device=device, **options)
