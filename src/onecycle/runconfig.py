"""Typed run configs: what ``onecycle find/fit/compare`` take, from config files and the command line.

Values come in layers, later ones winning: the dataclass defaults, the task's defaults
(``TASK_DEFAULTS``, for keys nobody set), a config file (TOML, or JSON such as a run's own
``config.json``), then the command line. Every key is checked against the dataclass (an unknown key
is an error naming it and where it came from) and every value against its type and range. A compare's
grid (its file and its expansion into cells) is in ``rungrid.py``.
"""

from __future__ import annotations

import difflib
import json
import math
import tomllib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "FindConfig", "FitConfig", "CompareConfig", "SCHEDULES", "TASK_DEFAULTS", "parse_lr",
           "is_ref", "check_name", "make_config", "read_config_file", "field_types", "unknown_key"]

SCHEDULES = ("cos", "clr_beta", "const", "step", "triangular", "wsd", "warmup_cos")

# Per-task defaults, applied to every key the user leaves unset. mnist1d: AdamW with decoupled weight
# decay 0.1, batch 64 and the paper's CNN widened from 25 to 64 channels. Measured with
# `benchmarks/reproduce_mnist1d.py --sweep` (5 seeds, 1cycle at the finder's LR, 20 epochs): the
# 25-channel CNN at batch 128 gets 92.9% with SGD and 94.0% with AdamW; AdamW with 64 channels 95.8%,
# with wd 0.1 too 95.9%, at batch 64 too 96.5% (the README has the whole grid).
# One torch thread for the small tasks: their batches are too small for intra-op parallelism to pay,
# and on a shared 2-core machine a second spinning thread made the demo 25x slower (9 s vs 205-255 s).
_MNIST1D = {"opt": "adamw", "wd": 0.1, "batch_size": 64, "model": "cnn", "model_opts": {"channels": 64},
            "threads": 1}
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist1d": _MNIST1D,
    "mnist1d_large": _MNIST1D,
    "digits": {"threads": 1},
    "charlm": {"clip": 0.25},  # Merity et al.'s clip: the seed thread's key to high LRs on an LSTM
}


class ConfigError(ValueError):
    """A bad configuration value or reference; the message names the key (and where it came from)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def _opt(default: Any, help: str) -> Any:
    """A config field with its help text (shown by ``--help``)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def _bad(key: str, must: str, value: Any) -> ConfigError:
    return ConfigError(f"{key} must be {must}, got {value!r}", key)


def check_name(key: str, value: str, where: str | None = None) -> str:
    """``value`` when it is one path component, as a run's or a compare's name must be: it is joined
    into ``<out>/<time>-<name>``, so ``x/../../elsewhere`` would write outside ``out`` and ``a/b``
    would nest folders. A ``ConfigError`` naming ``key`` (and ``where`` it came from) otherwise."""
    if not isinstance(value, str) or value in ("", ".", "..") or any(c in value for c in "/\\\0"):
        err = _bad(key, "one path component (not empty, '.' or '..'; no '/', '\\' or NUL)", value)
        raise ConfigError(f"{where}: {err}", key) if where else err
    return value


@dataclass
class FindConfig:
    """What builds a Learner, and the LR range test."""
    task: str = _opt("mnist1d", "built-in task (mnist1d, mnist1d_large, digits, charlm) or "
                     "package.module:function returning an onecycle.tasks.Task")
    model: str = _opt("", "model name (mlp, cnn, resnet1d, resnet20, resnet56, lstm) or package.module:function "
                      "(in_shape, n_out) -> nn.Module; empty: the task's")
    opt: str = _opt("sgd", "optimizer: sgd, adam, adamw, lars, lamb, sfree_sgd, sfree_adamw (schedule-free: "
                    "pip install 'onecycle[schedulefree]'), prodigy (pip install 'onecycle[prodigyopt]')")
    wd: float = _opt(0.0, "decoupled weight decay")
    clip: float = _opt(0.0, "global gradient-norm clipping (0: none)")
    batch_size: int = _opt(0, "batch size (0: the task's)")
    seed: int = _opt(0, "seed of the model init and the data shuffle")
    task_opts: dict = _opt({}, "KEY=VALUE options for the task builder (e.g. train_chars=200000)")
    model_opts: dict = _opt({}, "KEY=VALUE options for the model (e.g. channels=64)")
    threads: int = _opt(0, "torch CPU threads (0: torch's default)")
    device: str = _opt("", "torch device (cpu, cuda, cuda:1; empty: cuda when available, else cpu)")
    start_lr: float = _opt(1e-7, "LR finder: first LR")
    end_lr: float = _opt(10.0, "LR finder: last LR")
    num_it: int = _opt(100, "LR finder: iterations")
    finder_runs: int = _opt(1, "LR finder: range tests with different data orders; each suggestion is their median")
    rule: str = _opt("", "LR finder rule picking the suggestion (valley, slide, minimum, steep, val_steep, "
                     "val_min; empty: the library's default)")
    out: str = _opt("runs", "folder the run folder is made in")
    name: str = _opt("", "run name, one path component (the folder is <out>/<time>-<name>; empty: task, model, "
                     "optimizer and schedule)")
    run_dir: str = _opt("", "exact run folder instead of <out>/<time>-<name>")
    quiet: bool = _opt(False, "print nothing but errors")

    def validate(self) -> None:
        from .models import MODELS
        from .optim import OPTIMIZERS
        from .suggest import SUGGESTERS
        from .tasks import TASKS
        if self.task not in TASKS and not is_ref(self.task):
            raise _bad("task", f"one of {sorted(TASKS)} or package.module:function", self.task)
        if self.model and self.model not in MODELS and not is_ref(self.model):
            raise _bad("model", f"empty, one of {sorted(MODELS)} or package.module:function", self.model)
        if self.opt not in OPTIMIZERS:
            raise _bad("opt", f"one of {sorted(OPTIMIZERS)}", self.opt)
        from .optim.extras import missing
        if missing(self.opt):
            raise ConfigError(f"opt: {missing(self.opt)}", "opt")
        for key in ("wd", "clip"):
            _check_float(key, getattr(self, key), low=0.0)
        for key in ("batch_size", "threads"):
            if getattr(self, key) < 0:
                raise _bad(key, ">= 0", getattr(self, key))
        _check_float("start_lr", self.start_lr, low=0.0, strict=True)
        if not self.end_lr > self.start_lr:
            raise _bad("end_lr", f"> start_lr ({self.start_lr})", self.end_lr)
        _check_float("end_lr", self.end_lr)
        if self.num_it < 2:
            raise _bad("num_it", ">= 2", self.num_it)
        if self.finder_runs < 1:
            raise _bad("finder_runs", ">= 1", self.finder_runs)
        if self.device:
            import torch
            try:
                torch.device(self.device)
            except RuntimeError:
                raise _bad("device", "a torch device such as cpu, cuda or cuda:1", self.device) from None
        if self.rule and self.rule not in SUGGESTERS:
            raise _bad("rule", f"empty or one of {sorted(SUGGESTERS)}", self.rule)
        if self.name:  # empty: a name made from the task, model, optimizer and schedule
            check_name("name", self.name)


@dataclass
class FitConfig(FindConfig):
    """A training run: everything in ``FindConfig`` plus the schedule and the run folder's upkeep."""
    epochs: int = _opt(20, "epochs")
    lr: str = _opt("auto", "peak LR: a number, LO:HI spread over the model's param groups, or auto (the "
                   "finder's suggestion)")
    schedule: str = _opt("cos", "LR schedule: cos (fastai's 1cycle), clr_beta (fastai 0.7's linear 1cycle), "
                         "const, step, triangular, wsd (warmup-stable-decay), warmup_cos (linear warmup, cosine); "
                         "a schedule-free optimizer takes const only (after a --warmup-pct warmup)")
    div: float = _opt(25.0, "cos/clr_beta/triangular: the LR starts (and for clr_beta, triangular ends) at peak/div")
    div_final: float = _opt(1e5, "cos: the LR ends at peak/div_final")
    pct_start: float = _opt(0.25, "cos: fraction of training spent warming up")
    moms: list = _opt([0.95, 0.85], "cos/clr_beta: momentum (or Adam's beta1) high and low; empty: not cycled")
    anneal_pct: float = _opt(10.0, "clr_beta: percent of the cycle spent annealing below peak/div")
    milestones: list = _opt([0.5, 0.75], "step: fractions of training where the LR drops")
    gamma: float = _opt(0.1, "step: factor at each milestone")
    cycles: int = _opt(1, "triangular: number of cycles")
    warmup_pct: float = _opt(0.05, "wsd, warmup_cos, and const on a schedule-free optimizer: fraction of training "
                             "spent warming up linearly from 0")
    decay_pct: float = _opt(0.2, "wsd: fraction of training spent cooling down to 0 at the end")
    decay: str = _opt("1-sqrt", "wsd: the cool-down's shape: linear, cos or 1-sqrt")
    every: int = _opt(200, "checkpoint every N optimizer steps, and at each epoch end (0: epoch ends only)")
    ckpt_budget: float = _opt(0.005, "share of training time checkpoints may take: a scheduled write is skipped "
                              "while the last one is more recent than its cost / budget (0: never skip)")
    grad_stats: bool = _opt(False, "record per-group gradient statistics (GradStats) and plot them")
    tensorboard: bool = _opt(False, "also log every scalar to <run>/tensorboard (needs the tensorboard package)")

    def validate(self) -> None:
        super().validate()
        if self.epochs < 1:
            raise _bad("epochs", ">= 1", self.epochs)
        try:
            parse_lr(self.lr)
        except ValueError:
            raise _bad("lr", "a positive number, LO:HI or auto", self.lr) from None
        if self.schedule not in SCHEDULES:
            raise _bad("schedule", f"one of {list(SCHEDULES)}", self.schedule)
        _check_float("div", self.div, low=1.0)
        _check_float("div_final", self.div_final, low=0.0, strict=True)
        _check_float("pct_start", self.pct_start, low=0.0, high=1.0)
        if self.moms and (len(self.moms) != 2 or not all(0 <= m < 1 for m in self.moms)):
            raise _bad("moms", "empty or two momentums in [0, 1)", self.moms)
        _check_float("anneal_pct", self.anneal_pct, low=0.0, high=99.0)
        if not self.milestones or any(not 0 < m < 1 for m in self.milestones) or sorted(self.milestones) != \
                list(self.milestones):
            raise _bad("milestones", "increasing fractions in (0, 1)", self.milestones)
        _check_float("gamma", self.gamma, low=0.0, high=1.0, strict=True)
        _check_float("ckpt_budget", self.ckpt_budget, low=0.0, high=1.0)
        for key, low in (("cycles", 1), ("every", 0)):
            if getattr(self, key) < low:
                raise _bad(key, f">= {low}", getattr(self, key))
        self._validate_warmup()

    def _validate_warmup(self) -> None:
        """WSD's and warmup's fractions, and the schedules an optimizer of its own kind takes."""
        from .optim.extras import SCHEDULE_FREE
        from .warmup import DECAYS
        _check_float("warmup_pct", self.warmup_pct, low=0.0, high=0.99)
        _check_float("decay_pct", self.decay_pct, low=0.0, high=1.0)
        if self.schedule == "wsd" and self.warmup_pct + self.decay_pct > 1:
            raise _bad("decay_pct", f"<= 1 - warmup_pct ({1 - self.warmup_pct:g})", self.decay_pct)
        if self.decay not in DECAYS:
            raise _bad("decay", f"one of {list(DECAYS)}", self.decay)
        if self.opt in SCHEDULE_FREE and self.schedule != "const":
            raise ConfigError(f"schedule: {self.opt} is schedule-free: it runs at a constant LR after a linear warmup "
                              f"(--warmup-pct), so it takes --schedule const, got {self.schedule!r} (onecycle compare "
                              "maps a grid's other schedules to const for it)", "schedule")
        if self.opt == "prodigy" and isinstance(parse_lr(self.lr), slice):
            raise _bad("lr", "one number or auto for prodigy (one LR for every param group: its d is shared)", self.lr)


def _check_float(key: str, value: float, low: float | None = None, high: float | None = None,
                 strict: bool = False) -> None:
    ok = math.isfinite(value) and (low is None or value > low or (not strict and value == low)) and \
        (high is None or value <= high)
    if not ok:
        rng = f"{'>' if strict else '>='} {low}" if low is not None else "finite"
        raise _bad(key, rng + (f" and <= {high}" if high is not None else ""), value)


def parse_lr(text: str) -> str | float | slice:
    """``"auto"``, a positive number, or ``"lo:hi"`` (a slice spread over the param groups)."""
    if text == "auto":
        return "auto"
    parts = [float(p) for p in text.split(":")]
    if len(parts) > 2 or not all(math.isfinite(p) and p > 0 for p in parts):
        raise ValueError(f"lr must be a positive number, LO:HI or auto, got {text!r}")
    if len(parts) == 2:
        if parts[0] > parts[1]:
            raise ValueError(f"lr slice must go from low to high, got {text!r}")
        return slice(*parts)
    return parts[0]


def is_ref(text: str) -> bool:
    """``package.module:function``, a reference to the user's own code."""
    module, _, attr = text.partition(":")
    return bool(module) and bool(attr)


@dataclass
class CompareConfig:
    """A grid of fits: every ``FitConfig`` key given several values is an axis of the grid."""
    grid: str = _opt("", "TOML file: FitConfig keys at the top level, a [grid] table of key = [values]")
    jobs: int = _opt(2, "runs at a time (worker processes; with Ray, tasks in flight)")
    target: float | None = _opt(None, "metric value to reach: the table gives the epochs each configuration "
                                "took to reach it")
    metric: str = _opt("", "metric of the table and the target (empty: the task's first)")
    out: str = _opt("runs", "folder the compare folder is made in")
    name: str = _opt("compare", "compare name, one path component (the folder is <out>/<time>-<name>)")
    quiet: bool = _opt(False, "print only the final table")
    draw: str = _opt("cells", "when the runs' plots and reports are drawn: cells (each run as it ends, its folder "
                     "complete at once), end (all of them after the last run, here: runs only train) or none "
                     "(only the grid's own; onecycle plot RUN draws a run's later)")
    ray_address: str = _opt("", "run the cells as Ray tasks: local (a Ray started here and stopped after), auto "
                            "or an address (that cluster); empty: local worker processes")

    def validate(self) -> None:
        if self.jobs < 1:
            raise _bad("jobs", ">= 1", self.jobs)
        if self.target is not None:
            _check_float("target", self.target)
        if self.draw not in ("cells", "end", "none"):
            raise _bad("draw", "cells, end or none", self.draw)
        check_name("name", self.name)


# ---- building configs from layers of values ----------------------------------------------------
def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _coerce(where: str, key: str, hint: Any, value: Any) -> Any:
    """``value`` as the field's type (TOML and JSON give ints for whole floats, numbers for lr)."""
    def bad(must: str) -> ConfigError:
        return ConfigError(f"{where}: {key} must be {must}, got {value!r}", key)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is bool and not isinstance(value, bool):
        raise bad("true or false")
    if hint is int and (not number or not float(value).is_integer()):
        raise bad("an integer")
    if hint is float or (hint not in (bool, int, str, list, dict) and value is not None):  # float | None
        if not number:
            raise bad("a number")
        return float(value)
    if hint is str:
        if number:  # `lr = 0.1` in a TOML file
            return repr(value)
        if not isinstance(value, str):
            raise bad("a string")
    if hint is list:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                           for v in value):
            raise bad("a list of numbers")
        return [float(v) for v in value]
    if hint is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise bad("a table of options")
        return dict(value)
    return int(value) if hint is int else value


def unknown_key(where: str, key: str, known: Sequence[str]) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    return ConfigError(f"{where}: unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""), key)


def task_defaults(task: str, explicit: Mapping[str, Any]) -> dict[str, Any]:
    """``TASK_DEFAULTS[task]``; its model options only go with its own model."""
    out = dict(TASK_DEFAULTS.get(task, {}))
    if explicit.get("model", out.get("model")) not in ("", out.get("model")):
        out.pop("model_opts", None)
    return out


def make_config(cls: type, layers: Sequence[tuple[str, Mapping[str, Any]]]) -> Any:
    """``cls`` from ``(where, values)`` layers, later ones winning, then the task's defaults for
    every key still unset; ``ConfigError`` names the key and the layer it came from."""
    types = field_types(cls)
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for where, layer in layers:
        for key, value in layer.items():
            if key not in types:
                raise unknown_key(where, key, list(types))
            values[key] = _coerce(where, key, types[key], value)
            origin[key] = where
    if "task" in types:
        task = values.get("task", cls.task)  # type: ignore[attr-defined]
        for key, value in task_defaults(task, values).items():
            if key in types and key not in values:
                values[key] = json.loads(json.dumps(value))  # a copy: configs never share a dict
                origin[key] = f"task {task!r} default"
    cfg = cls(**values)
    try:
        cfg.validate()
    except ConfigError as err:
        raise ConfigError(f"{origin.get(err.key or '', 'default')}: {err}", err.key) from None
    return cfg


def read_config_file(path: str) -> dict[str, Any]:
    """A TOML or JSON config file as a dict. A run's ``config.json`` gives its ``config`` table
    (less ``run_dir``: a new run never writes into the old one's folder)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file: {err.strerror}", "config") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: not valid {'JSON' if p.suffix == '.json' else 'TOML'}: {err}", "config") \
            from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file holds a table of keys, got {type(data).__name__}", "config")
    if "config" in data and "versions" in data:  # a run folder's config.json
        data = {k: v for k, v in data["config"].items() if k != "run_dir"}
    return data
