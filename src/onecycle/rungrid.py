"""A compare's grid: grid files, and the expansion of axes of ``FitConfig`` values into cells (one
checked ``FitConfig`` each) over the layers of ``runconfig.make_config``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from .runconfig import (
    TASK_DEFAULTS,
    CompareConfig,
    ConfigError,
    FitConfig,
    field_types,
    make_config,
    read_config_file,
    unknown_key,
)

__all__ = ["expand_grid", "read_grid_file"]


_AXIS_ORDER = ("task", "model", "schedule", "opt", "lr", "epochs")


def _resolved(layers: Sequence[tuple[str, Mapping[str, Any]]], key: str) -> Any:
    """The value of ``key`` these layers give a ``FitConfig`` (the last layer setting it, else the
    task's default, else the dataclass's)."""
    for _, layer in reversed(layers):
        if key in layer:
            return layer[key]
    task = FitConfig.task if key == "task" else _resolved(layers, "task")
    return TASK_DEFAULTS.get(task, {}).get(key, getattr(FitConfig, key))


def expand_grid(layers: Sequence[tuple[str, Mapping[str, Any]]], axes: Mapping[str, Sequence[Any]],
                origins: Mapping[str, str] | None = None, notes: list[str] | None = None
                ) -> list[tuple[dict[str, Any], FitConfig]]:
    """Every combination of the ``axes`` values over the base ``layers``: ``(label, config)``, the
    label holding the values that vary. Seeds vary last, so a configuration's seeds are neighbours.
    Every cell is checked before anything runs; an error names the axis's ``origins[key]`` (the grid
    file's ``[grid]`` table, the command line), else "grid". A schedule-free optimizer takes
    ``const`` only (a constant LR after its warmup): its cells of other schedules are mapped to
    ``const`` and run once, and ``notes`` gets a line saying so."""
    from .optim.extras import SCHEDULE_FREE
    keys = [k for k in _AXIS_ORDER if k in axes] + sorted(k for k in axes if k not in _AXIS_ORDER and k != "seed")
    keys += ["seed"] if "seed" in axes else []
    cells, seen, mapped = [], set(), {}
    for combo in itertools.product(*(axes[k] for k in keys)):
        values = dict(zip(keys, combo))
        cell = [*layers, *(((origins or {}).get(k, "grid"), {k: v}) for k, v in values.items())]
        opt, schedule = _resolved(cell, "opt"), _resolved(cell, "schedule")
        if opt in SCHEDULE_FREE and schedule != "const":
            mapped.setdefault((opt, _resolved(cell, "warmup_pct")), set()).add(schedule)
            cell.append(("grid (schedule-free)", {"schedule": "const"}))
            values.update(schedule="const") if "schedule" in values else None
        key = json.dumps(values, sort_keys=True, default=str)
        if key not in seen:  # a mapped cell the grid already has
            seen.add(key)
            cells.append(({k: v for k, v in values.items() if len(axes[k]) > 1}, make_config(FitConfig, cell)))
    for (opt, warmup), schedules in mapped.items():
        (notes if notes is not None else []).append(
            f"{opt} is schedule-free: schedule {', '.join(sorted(schedules))} mapped to const (a constant LR after a "
            f"linear warmup over {float(warmup):.0%} of training), run once")
    return cells


def read_grid_file(path: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[Any]]]:
    """A compare grid file: (compare keys, base run keys, axes). Top-level keys are
    ``CompareConfig`` or ``FitConfig`` keys; the ``[grid]`` table maps ``FitConfig`` keys to lists."""
    data = read_config_file(path)
    compare_keys, run_keys = set(field_types(CompareConfig)), set(field_types(FitConfig))
    grid = data.pop("grid", {})
    if not isinstance(grid, dict):
        raise ConfigError(f"{path}: grid must be a table of key = [values], got {grid!r}", "grid")
    for key in data:
        if key not in compare_keys and key not in run_keys:
            raise unknown_key(path, key, sorted(compare_keys | run_keys))
    axes = {}
    for key, values in grid.items():
        if key not in run_keys:
            raise unknown_key(f"{path} [grid]", key, sorted(run_keys))
        listed = field_types(FitConfig)[key] is list  # an axis of lists: moms = [[0.95, 0.85], [0.9, 0.9]]
        several = isinstance(values, list) and bool(values) and (not listed or all(isinstance(v, list) for v in values))
        axes[key] = list(values) if several else [values]
    return ({k: v for k, v in data.items() if k in compare_keys},
            {k: v for k, v in data.items() if k not in compare_keys}, axes)
