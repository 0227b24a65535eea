"""Argument checks, one home for them: each raises ``TypeError``/``ValueError`` naming the argument
and the value, and is called before anything changes. Numbers may be Python numbers, numpy scalars,
or 0-d tensors and arrays (anything with ``__float__`` and no elements beyond one). Also the one way
to import an optional extra: an ``ImportError`` naming the extra to install when it is missing."""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
import os
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

__all__ = ["check_number", "check_int", "check_bool", "check_type", "check_callable", "check_choice", "check_device",
           "check_path", "check_file_path", "is_scalar", "per_group", "check_loader", "loader_len", "check_keywords",
           "warn", "install_hint", "import_extra"]


def is_scalar(value: object) -> bool:
    """A single number: not a str, and either without a length or 0-dimensional (a 0-d tensor or
    array has ``__len__`` but no length)."""
    if isinstance(value, str):
        return False
    return getattr(value, "ndim", None) == 0 or not hasattr(value, "__len__")


def check_number(name: str, value: object, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a float after checking it is a finite real number (not complex) inside the range."""
    if (isinstance(value, (bool, str)) or not is_scalar(value) or not hasattr(value, "__float__")
            or _is_complex(value)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")
    return v


def _is_complex(value: object) -> bool:
    """A complex number (Python, numpy or torch): float() of a numpy one drops its imaginary part."""
    dtype = getattr(value, "dtype", None)
    return isinstance(value, complex) or getattr(dtype, "kind", None) == "c" or getattr(dtype, "is_complex", False)


def check_int(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    """``value`` when it is an int (not a bool) in ``[low, high]`` (either end may be open: None).
    The message says the whole requirement, for a wrong type too: ``n must be an int >= 1, got 2.0``."""
    if low is not None and high is not None:
        want = f"an int in [{low}, {high}]"
    else:
        want = "an int" + (f" >= {low}" if low is not None else f" <= {high}" if high is not None else "")
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be {want}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be {want}, got {value!r}")
    return value


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def check_callable(name: str, value: object, what: str = "callable", none_ok: bool = False) -> Any:
    """``value`` when it can be called (or is None, with ``none_ok``); ``what`` says what is expected."""
    if not (callable(value) or (none_ok and value is None)):
        raise TypeError(f"{name} must be {what}{' or None' if none_ok else ''}, got {value!r}")
    return value


def check_choice(name: str, value: object, choices: Sequence[Any]) -> Any:
    """``value`` when it is one of ``choices`` (compared with ``==``, bools kept apart from numbers)."""
    if not any(value == c and type(value) is type(c) or (value is c) for c in choices):
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def check_device(name: str, value: object) -> Any:
    """``value`` as a ``torch.device`` (None stays None)."""
    import torch
    if value is None:
        return None
    try:
        return torch.device(value)  # type: ignore[arg-type]
    except (RuntimeError, TypeError):
        raise ValueError(f"{name} must be a torch.device or a name such as 'cpu' or 'cuda:0', got {value!r}") from None


def check_type(name: str, value: object, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(value, kind):
        want = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise TypeError(f"{name} must be a {want}, got {type(value).__name__}")
    return value


def check_path(name: str, value: object) -> str:
    """``value`` (a ``str`` or ``os.PathLike``, not empty) as a ``str``."""
    if not isinstance(value, str | os.PathLike):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(value).__name__}: {value!r}")
    path = os.fsdecode(os.fspath(value))
    if not path:
        raise ValueError(f"{name} must not be empty, got {path!r}")
    return path


def check_file_path(name: str, value: object) -> str:
    """``check_path``, naming a file rather than an existing folder (reading or replacing a folder as
    a file would otherwise fail obscurely, deep inside a write)."""
    path = check_path(name, value)
    if os.path.isdir(path):
        raise ValueError(f"{name} must be a file path, but {path!r} is a directory")
    return path


def per_group(name: str, value: object, n: int, **limits: Any) -> list[float]:
    """One number per param group: a number for all, or a sequence of ``n``."""
    if isinstance(value, (str, bytes)):  # not a sequence of one-character numbers
        raise TypeError(f"{name} must be a number or a sequence of numbers (one per param group), got {value!r}")
    values = [value] * n if is_scalar(value) else list(value)  # type: ignore[call-overload]
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} values but there are {n} param groups, got {value!r}")
    return [check_number(f"{name}[{i}]" if n > 1 and not is_scalar(value) else name, v, **limits)
            for i, v in enumerate(values)]


def loader_len(dl: object) -> int | None:
    """``len(dl)``, or None for a loader without a length."""
    try:
        return len(dl)  # type: ignore[arg-type]
    except TypeError:
        return None


def check_loader(name: str, dl: object) -> None:
    """A loader yields batches: an iterable that is not a ``Dataset`` (those yield samples: wrap
    them in a ``DataLoader``) nor a tensor or array (rows), and, when it has a length, not empty."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Dataset
    if isinstance(dl, (torch.Tensor, np.ndarray)):  # iterating one yields its rows
        raise TypeError(f"{name} is a {type(dl).__name__} of shape {tuple(dl.shape)}, not a loader: pass a loader "
                        f"of batches, e.g. torch.utils.data.DataLoader(TensorDataset(x), batch_size=64) (or call "
                        "the model on it)")
    if isinstance(dl, Dataset) and not isinstance(dl, DataLoader):
        raise TypeError(f"{name} is a {type(dl).__name__}, a Dataset: pass a loader of batches, "
                        f"e.g. torch.utils.data.DataLoader({name}, batch_size=64)")
    if not hasattr(dl, "__iter__"):
        raise TypeError(f"{name} must be an iterable of batches (a DataLoader), got {type(dl).__name__}")
    if loader_len(dl) == 0:
        raise ValueError(f"{name} is empty (len 0)")


_LR_NAMES = ("lr_max", "base_lr", "lr")  # this library's names for the LR, in the order looked for
_LR_SPELLINGS = {"lr", "lr_max", "max_lr", "base_lr", "learning_rate", "peak_lr", "max_learning_rate"}


def check_keywords(where: str, kw: Mapping[str, Any], own: Callable, targets: Sequence[Callable],
                   sets: Mapping[str, str] | None = None) -> None:
    """The keyword arguments that ``own`` (called ``where``) passes on through ``**kw`` to
    ``targets`` (a chain of such calls): one that no target takes is named at once, with the
    closest name (else it surfaces later as another error, or names an inner function); one that
    ``own`` sets itself, with ``sets[key]``, a hint. Not checked when a target hides what it takes
    (``*args``, or ``**kwargs`` at the chain's end: a wrapper, a mock)."""
    sigs = [inspect.signature(fn).parameters.values() for fn in targets]
    if any(p.kind is p.VAR_POSITIONAL for ps in sigs for p in ps) or any(p.kind is p.VAR_KEYWORD for p in sigs[-1]):
        return
    plain = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    mine = [p.name for p in inspect.signature(own).parameters.values() if p.kind in plain]
    sets = dict(sets or {})
    passable = [p.name for ps in sigs for p in ps if p.kind in plain and p.name not in mine and p.name not in sets]
    for key in kw:
        if key in passable:
            continue
        if key in _LR_SPELLINGS:  # the LR under another library's name: ours, or no guess
            close = [n for n in _LR_NAMES if n in mine][:1]
        elif key in sets:
            raise TypeError(f"{where}() got an unexpected keyword argument {key!r}: {where} sets it itself"
                            + (f"; {sets[key]}" if sets[key] else ""))
        else:
            close = difflib.get_close_matches(key, [*mine, *passable], n=1, cutoff=0.6)
        raise TypeError(f"{where}() got an unexpected keyword argument {key!r}"
                        + (f"; did you mean {close[0]!r}?" if close and close[0] != key else ""))


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` pointing at the first caller outside this package (the user's line, not
    ``learner.py``); Python 3.11 has no ``skip_file_prefixes``."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    stack = traceback.extract_stack()  # oldest first; the last entry is this function
    inside = next((i for i, f in enumerate(reversed(stack)) if not os.path.abspath(f.filename).startswith(package)),
                  len(stack))
    warnings.warn(message, category, stacklevel=inside + 1)


def install_hint(extra: str) -> str:
    """The command that installs onecycle's optional extra ``extra``."""
    return f"pip install 'onecycle[{extra}]'"


def import_extra(module: str, extra: str, needs: str) -> ModuleType:
    """``module``, imported only now (an optional dependency); when it cannot be, an ``ImportError``
    saying ``needs`` ("what needs which package") and the command that installs ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{needs}: {install_hint(extra)}") from err
