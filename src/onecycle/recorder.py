"""Recorder: the training history as plain Python lists of floats.

Per iteration: the LR of every param group, momentum, raw loss and its smoothed value (a
bias-corrected EMA whose factor a fit sets from its length, ``smoothing.smoothing_beta``); per epoch:
train loss, validation loss, every metric, wall time.
Extra per-step series (gradient statistics, trust ratios) live in ``series``. Never tensors, so
nothing keeps a graph or device memory alive. It saves to JSON and CSV and loads back, and writes
an append-only log (JSON lines: a snapshot, then per line only what was added since: what a run
saves at each epoch end, so that costs the epoch's rows, not the whole history); plotting is
``plots.py``'s job (the methods here only forward).

Epochs are numbered from 1 outside Python: ``epochs.csv``'s first column, and ``history.json`` says so
(``"epoch_numbering": "from 1"``: index ``i`` of a per-epoch list is epoch ``i + 1``). Iterations count
from 0. A file written before the key existed loads the same way.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .metrics import percent_column
from .smoothing import SmoothLoss

__all__ = ["Recorder"]


_ITER_FIELDS = ("group_lrs", "moms", "losses", "smooth_losses")
_EPOCH_FIELDS = ("train_losses", "val_losses", "times", "epoch_iters")
EPOCH_NUMBERING = "from 1"  # how the JSON and CSV exports number epochs


class Recorder:
    """History of a Learner's training. ``lrs`` is the last (head) group's LR, as fastai 0.7 plotted."""

    def __init__(self, metric_names: Iterable[str] = (), smooth_beta: float = 0.98,
                 higher_is_better: Mapping[str, bool] | None = None) -> None:
        self.metric_names = list(metric_names)
        # each metric's direction (``metrics.metric_directions``); a column missing here reads by its name
        self.higher_is_better = dict(higher_is_better or {})
        self.reset(smooth_beta)

    def reset(self, smooth_beta: float | None = None) -> None:
        """Empty the history; ``smooth_beta``: the EMA factor of ``smooth_losses`` from now on."""
        self.group_lrs: list[list[float]] = []  # [group][iteration]
        self.moms: list[float] = []
        self.losses: list[float] = []
        self.smooth_losses: list[float] = []
        self.train_losses: list[float] = []
        self.val_losses: list[float] = []
        self.metrics: dict[str, list[float]] = {n: [] for n in self.metric_names}
        self.times: list[float] = []
        self.epoch_iters: list[int] = []  # iterations done at each epoch's end
        self.series: dict[str, list[float]] = {}
        self.smoother = SmoothLoss(self.smoother.beta if smooth_beta is None else smooth_beta)

    def __repr__(self) -> str:  # what a notebook shows after fit_one_cycle(...): the last epoch, not lists
        n = len(self.train_losses)
        columns = [("train_loss", self.train_losses), ("val_loss", self.val_losses), *self.metrics.items()]
        last = [f"{name} {100 * values[-1]:.2f}%" if percent_column(name, values) else f"{name} {values[-1]:.4g}"
                for name, values in columns if values and math.isfinite(values[-1])]
        return (f"Recorder({n} epoch{'' if n == 1 else 's'}, {len(self.losses)} iterations"
                + (f"; epoch {n}: " + ", ".join(last) if last else "") + ")")

    # ---- writing (the loop calls these) -------------------------------------------------------
    def add_iterations(self, lrs: list[list[float]], moms: list[float], losses: list[float]) -> None:
        """Append a block of iterations: ``lrs[i]`` holds every group's LR at iteration ``i``."""
        if lrs and not self.group_lrs:
            self.group_lrs = [[] for _ in lrs[0]]
        for g, column in zip(self.group_lrs, zip(*lrs)):
            g.extend(column)
        self.moms.extend(moms)
        self.losses.extend(losses)
        self.smooth_losses.extend(self.smoother.extend(losses))

    def add_epoch(self, train_loss: float, val: Mapping[str, float] | None, seconds: float) -> None:
        """One epoch. A key of ``val`` not seen before (a dict-valued metric's keys are known only after
        its first compute) becomes a new metric series, NaN for the earlier epochs; a known metric
        missing from ``val`` gets NaN."""
        val = dict(val or {})
        for name, value in val.items():
            if not isinstance(name, str):
                raise TypeError(f"val: a metric name must be a str, got {name!r} ({type(name).__name__})")
            if not isinstance(value, numbers.Real):  # torch.Tensor is not a Real: plain floats only here
                raise TypeError(f"val[{name!r}] must be a number, got {value!r} ({type(value).__name__})")
        if val and not self.train_losses:  # a dict-valued metric's own name is no column: its keys are
            unseen = [n for n in self.metric_names if n not in val]
            self.metric_names = [n for n in self.metric_names if n in val]
            for name in unseen:
                del self.metrics[name]
        self.train_losses.append(train_loss)
        self.val_losses.append(float(val.get("val_loss", math.nan)))
        for name in val:
            if name != "val_loss" and name not in self.metrics:
                self.metric_names.append(name)
                self.metrics[name] = [math.nan] * (len(self.train_losses) - 1)
        for name in self.metric_names:
            self.metrics[name].append(float(val.get(name, math.nan)))
        self.times.append(seconds)
        self.epoch_iters.append(len(self.losses))

    def log(self, name: str, value: float) -> None:
        """Append to an extra per-step series."""
        self.series.setdefault(name, []).append(float(value))

    # ---- views -------------------------------------------------------------------
    @property
    def lrs(self) -> list[float]:
        return self.group_lrs[-1] if self.group_lrs else []

    @property
    def n_epochs(self) -> int:
        return len(self.train_losses)

    # ---- persistence ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in _ITER_FIELDS + _EPOCH_FIELDS}
        out.update(metric_names=self.metric_names, metrics=self.metrics, series=self.series,
                   smoother=self.smoother.state_dict(), higher_is_better=self.higher_is_better)
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.metric_names = list(state["metric_names"])
        for k in _ITER_FIELDS + _EPOCH_FIELDS:
            setattr(self, k, [list(v) for v in state[k]] if k == "group_lrs" else list(state[k]))
        self.metrics = {k: list(v) for k, v in state["metrics"].items()}
        self.series = {k: list(v) for k, v in state.get("series", {}).items()}
        self.higher_is_better = dict(state.get("higher_is_better", {}))  # older files: by name
        self.smoother = SmoothLoss()
        self.smoother.load_state_dict(state["smoother"])  # its beta too

    def save_json(self, path: str | os.PathLike) -> Path:
        atomic_write_text(path, json.dumps({**self.state_dict(), "epoch_numbering": EPOCH_NUMBERING}, allow_nan=True))
        return Path(path)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Recorder:
        rec = cls()
        rec.load_state_dict(json.loads(json.dumps(state)))  # a deep copy of plain data
        return rec

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> Recorder:
        return cls.from_state(json.loads(Path(path).read_text(encoding="utf-8")))

    def iteration_rows(self, start: int = 0) -> tuple[list[str], list[list]]:
        """The header and one row per iteration from ``start`` on."""
        n_groups = len(self.group_lrs)
        header = ["iteration"] + [f"lr_{g}" for g in range(n_groups)] + ["mom", "loss", "smooth_loss"]
        header += sorted(self.series)
        rows = []
        for i in range(start, len(self.losses)):
            row = [i] + [self.group_lrs[g][i] for g in range(n_groups)]
            row += [_at(self.moms, i), self.losses[i], self.smooth_losses[i]]
            row += [_at(self.series[k], i) for k in sorted(self.series)]
            rows.append(row)
        return header, rows

    def epoch_rows(self, start: int = 0) -> tuple[list[str], list[list]]:
        """The header and one row per epoch from index ``start`` on, numbered from 1; an accuracy-like
        metric in percent, as everywhere a person reads it (``metrics.percent_column``), its header
        saying so: ``accuracy (%)``."""
        pct = {n: percent_column(n, self.metrics[n]) for n in self.metric_names}
        header = ["epoch", "train_loss", "val_loss", *[f"{n} (%)" if pct[n] else n for n in self.metric_names],
                  "time (s)", "iterations"]
        rows = [[e + 1, self.train_losses[e], self.val_losses[e],
                 *[self.metrics[n][e] * (100.0 if pct[n] else 1.0) for n in self.metric_names],
                 self.times[e], self.epoch_iters[e]] for e in range(start, self.n_epochs)]
        return header, rows

    def save_csv(self, folder: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``iterations.csv`` and ``epochs.csv`` into ``folder``."""
        folder = Path(folder)
        paths = folder / "iterations.csv", folder / "epochs.csv"
        for path, (header, rows) in zip(paths, (self.iteration_rows(), self.epoch_rows())):
            atomic_write_text(path, csv_text(header, rows))
        return paths

    # ---- the append-only log: a snapshot line, then what each epoch end added ----------------------
    def log_snapshot(self) -> tuple[str, dict[str, Any]]:
        """The log's first line (the whole history, ``history.json``'s content) and the lengths it
        covers, for ``log_delta``."""
        state = self.state_dict()
        return _line({"snapshot": {**state, "epoch_numbering": EPOCH_NUMBERING}}), _lengths(state)

    def log_delta(self, since: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """One log line holding only what was added since ``since`` (the lengths the last line
        covered): each list's new tail with the index it starts at, so its size is that of the new
        rows, whatever the history's length. Returns the line and the new lengths."""
        state = self.state_dict()
        delta: dict[str, Any] = {k: state[k] for k in _WHOLE}
        for key in _FLAT:
            delta[key] = [since[key], state[key][since[key]:]]
        for key in _NESTED:
            items = enumerate(state[key]) if key == "group_lrs" else state[key].items()
            delta[key] = {str(k): [since[key].get(str(k), 0), v[since[key].get(str(k), 0):]] for k, v in items}
        return _line(delta), _lengths(state)

    @classmethod
    def from_log(cls, text: str, where: str = "history log") -> Recorder:
        """The history a log holds: its snapshot plus every complete line after it. A last line cut
        short (the process was killed while appending it) is left out; any other bad line, or a line
        that does not continue where the history stands, is a ``ValueError`` naming the line."""
        lines = text.split("\n")
        complete = lines[:-1]  # what follows the last newline is a line cut short, or nothing
        if not complete:
            raise ValueError(f"{where}: no complete line")
        state: dict[str, Any] = {}
        for n, line in enumerate(complete, 1):
            try:
                entry = json.loads(line)
            except ValueError as err:
                raise ValueError(f"{where}: line {n} is not JSON: {err}") from None
            if n == 1:
                if "snapshot" not in entry:
                    raise ValueError(f"{where}: line 1 is not a snapshot")
                state = entry["snapshot"]
            else:
                _apply(state, entry, f"{where}: line {n}")
        return cls.from_state(state)

    # ---- plots (drawn by plots.py) ----------------------------------------------------------
    def plot_lr(self, **kw: Any):
        """LR (one line per distinct group) and momentum (``momentum_label="beta1"`` for Adam) by epoch."""
        from . import plots
        return plots.plot_lr(self, **kw)

    def plot_dashboard(self, **kw: Any):
        """LR, momentum, losses and every metric on one shared epoch axis (``plots.plot_dashboard``)."""
        from . import plots
        return plots.plot_dashboard(self, **kw)

    def plot_losses(self, **kw: Any):
        from . import plots
        return plots.plot_losses(self, **kw)

    def plot_metrics(self, **kw: Any):
        from . import plots
        return plots.plot_metrics(self, **kw)

    def plot_grad_stats(self, **kw: Any):
        from . import plots
        return plots.plot_series(self, prefixes=("grad_mean_abs/", "grad_norm/"), **kw)

    def plot_trust_ratios(self, **kw: Any):
        from . import plots
        return plots.plot_series(self, prefixes=("trust_mean/", "trust_min/", "trust_max/"), **kw)


def _at(values: list, i: int) -> float:
    return values[i] if i < len(values) else math.nan


def csv_text(header: list[str], rows: list[list], with_header: bool = True) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    if with_header:
        writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


# How a log line carries each part of the state: lists by their new tail, the small rest whole.
_FLAT = tuple(k for k in _ITER_FIELDS + _EPOCH_FIELDS if k != "group_lrs")
_NESTED = ("group_lrs", "metrics", "series")
_WHOLE = ("metric_names", "smoother")


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, allow_nan=True, separators=(",", ":")) + "\n"


def _lengths(state: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: len(state[k]) for k in _FLAT}
    out["group_lrs"] = {str(g): len(v) for g, v in enumerate(state["group_lrs"])}
    out.update({k: {name: len(v) for name, v in state[k].items()} for k in ("metrics", "series")})
    return out


def _apply(state: dict[str, Any], delta: dict[str, Any], where: str) -> None:
    """Extend ``state`` by one log line; each tail must start where its list ends."""
    def extend(values: list, start: int, tail: list, name: str) -> None:
        if start != len(values):
            raise ValueError(f"{where}: {name} continues at {start}, the history holds {len(values)}")
        values.extend(tail)

    for key in _WHOLE:
        state[key] = delta[key]
    for key in _FLAT:
        extend(state[key], *delta[key], key)
    groups = state["group_lrs"]
    for g, (start, tail) in delta["group_lrs"].items():
        while len(groups) <= int(g):
            groups.append([])
        extend(groups[int(g)], start, tail, f"group_lrs[{g}]")
    for key in ("metrics", "series"):
        for name, (start, tail) in delta[key].items():
            extend(state[key].setdefault(name, []), start, tail, f"{key}[{name!r}]")
