"""What a grid costs beyond its fits (issue 21): the 8-cell grid

    onecycle compare --task digits --opt sgd adamw --seed 0 1 2 3 --epochs 2 --lr 0.05 --jobs 2

against the same 8 fits run one after another in one Python process through the library
(``runbuild.build_learner`` and ``Learner.fit_sched`` with the schedule ``onecycle fit`` uses; no run
folder, no plots). Each contender runs as a fresh process, timed from outside (exec to exit, torch's
import included in both), the contenders alternating, ``--reps`` times; the median and the range are
printed with the 1-minute load average before each run, and the CPU seconds (user + system) of the
contender's whole process tree, which another job on the machine disturbs much less than the wall
time. The grid's cells' own time split (from their ``result.json``) says where a cell's time went.

    python benchmarks/grid_overhead.py                          # this checkout's grid and the library
    python benchmarks/grid_overhead.py --src /tmp/old/src --reps 5   # also another checkout's grid
    python benchmarks/grid_overhead.py --ray                     # also the grid on a local Ray
    python benchmarks/grid_overhead.py --grid-args --draw end        # extra compare options
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRID = ["--task", "digits", "--opt", "sgd", "adamw", "--seed", "0", "1", "2", "3", "--epochs", "2",
        "--lr", "0.05", "--jobs", "2"]

_LIBRARY = """
import itertools
from onecycle.runbuild import build_learner
from onecycle.runconfig import FitConfig, make_config
from onecycle.runs import schedules_for
for opt, seed in itertools.product(["sgd", "adamw"], [0, 1, 2, 3]):
    cfg = make_config(FitConfig, [("bench", {"task": "digits", "opt": opt, "seed": seed, "epochs": 2,
                                             "lr": "0.05", "quiet": True})])
    learn, task = build_learner(cfg)
    lr, mom = schedules_for(cfg, len(task.train_dl))
    learn.fit_sched(cfg.epochs, [0.05] * len(learn.layer_groups()), lr, mom)
"""


def _env(src: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src)}


def run_grid(src: Path, extra: list[str]) -> tuple[float, list[dict]]:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "onecycle", "compare", *GRID, *extra, "--out", out, "--quiet"],
                       env=_env(src), check=True, stdout=subprocess.DEVNULL, cwd=out)
        wall = time.perf_counter() - start
        splits = [json.loads(p.read_text()).get("time", {}) for p in Path(out).glob("*/*/result.json")]
    return wall, splits


def run_library(src: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", _LIBRARY], env=_env(src), check=True)
    return time.perf_counter() - start


def _cpu() -> float:
    """CPU seconds of this process's finished children and everything they waited for."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--src", nargs="*", default=[], help="other checkouts' src folders whose grid to time too")
    ap.add_argument("--ray", action="store_true", help="also the grid on a local Ray (its start and stop included)")
    ap.add_argument("--grid-args", nargs=argparse.REMAINDER, default=[], help="extra options for compare")
    args = ap.parse_args()
    contenders = {"library (one process)": lambda: (run_library(REPO / "src"), []),
                  "grid (this checkout)": lambda: run_grid(REPO / "src", args.grid_args)}
    if args.ray:
        contenders["grid --ray (this checkout)"] = lambda: run_grid(REPO / "src", [*args.grid_args, "--ray"])
    for src in args.src:
        contenders[f"grid ({src})"] = lambda s=Path(src): run_grid(s, [])
    walls: dict[str, list[float]] = {k: [] for k in contenders}
    cpus: dict[str, list[float]] = {k: [] for k in contenders}
    loads: dict[str, list[float]] = {k: [] for k in contenders}
    splits: dict[str, list[dict]] = {k: [] for k in contenders}
    names = list(contenders)
    for rep in range(args.reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:  # rotate who goes first
            loads[name].append(os.getloadavg()[0])
            cpu = _cpu()
            wall, cells = contenders[name]()
            walls[name].append(wall)
            cpus[name].append(_cpu() - cpu)
            splits[name] += cells
            print(f"rep {rep}: {name}: {wall:.2f} s wall, {cpus[name][-1]:.2f} s CPU (load {loads[name][-1]:.2f})",
                  flush=True)
    print(f"\n{'contender':<40} {'wall: median':>12} {'min':>7} {'max':>7} {'CPU: median':>12} {'min':>7} {'max':>7}"
          "   load (1 min) at start")
    for name in names:
        w, c = walls[name], cpus[name]
        print(f"{name:<40} {statistics.median(w):11.2f}s {min(w):6.2f}s {max(w):6.2f}s {statistics.median(c):11.2f}s "
              f"{min(c):6.2f}s {max(c):6.2f}s   " + " ".join(f"{x:.1f}" for x in loads[name]))
    for name, cells in splits.items():
        if cells:
            keys = [k for k in cells[0] if k != "total"]
            parts = ", ".join(f"{k} {statistics.median(c.get(k, 0.0) for c in cells):.2f}" for k in keys)
            print(f"{name}: a cell's median time split (s): total "
                  f"{statistics.median(c.get('total', 0.0) for c in cells):.2f} ({parts})")


if __name__ == "__main__":
    main()
