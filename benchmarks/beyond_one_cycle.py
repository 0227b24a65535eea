"""The seed thread's question asked today: where does 1cycle win, and where not, against warmup-stable-
decay (WSD), schedule-free SGD and AdamW, and LR-free Prodigy, each method at its own LR finder's
suggestion? Every run goes through ``onecycle compare`` (each cell runs its own finder first).

    python benchmarks/beyond_one_cycle.py [--seeds 5] [--jobs 2] [--out runs/beyond] [--tasks mnist1d digits charlm]
                                          [--draw end] [--charlm-opts train_chars=200000]
    python benchmarks/beyond_one_cycle.py --tables        # the tables again, from the saved raw results

A call replaces the saved runs of the tasks it runs and keeps the others', so the tasks can be run
one at a time (the char-LM with fewer seeds and characters where the time is short).

The grids, per task (``grids()`` spells every command out):

- methods: ``--schedule cos wsd const`` crossed with the optimizers (clr_beta, fastai 0.7's linear
  1cycle, is left out to keep the compute to 11 methods); a schedule-free one runs once, at a constant
  LR after a 5% linear warmup (the grid maps its other schedules to const);
- MNIST-1D (CNN): SGD and schedule-free SGD without weight decay, AdamW, schedule-free AdamW and
  Prodigy with the task's 0.1 (decoupled; each of these applies it as ``lr * wd * w``): the task
  defaults' sweep shows SGD at 0.1 collapsing; digits (MLP) and the char-LM (AWD-LSTM, clip 0.25)
  without weight decay, one grid each;
- budgets 5, 10, 20 epochs (char-LM 2 and 4), seeds 0..N-1;
- the anytime check: a run stopped at 25, 50, 75% of the longest budget. A schedule planned for the
  whole budget (1cycle, clr_beta, warmup-cosine, const) and a schedule-free one stand as they are at
  that epoch (the long run's history; schedule-free: its evaluation weights, as validated); WSD
  cools down then: a WSD run of that length (the 5- and 10-epoch runs of the main grid, and one more
  grid at 15 epochs; char-LM 1 and 3), identical to branching the long run before its cool-down but
  for the warmup, which is 5% of each run.

Writes ``benchmarks/beyond_one_cycle/results.json`` (every run: method, budget, seed, LR, per-epoch
metric, times; the commands with their seconds; per task the seeds, wall time and load) and prints the
README's tables. The grids draw their runs' plots once all their runs are done (``--draw end``), so
drawing never holds a worker. Takes well over an hour on 2 shared cores: run it ``nice``d in the
background.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from onecycle.metrics import lower_is_better

RAW = Path(__file__).parent / "beyond_one_cycle" / "results.json"
SCHEDULES = ["cos", "wsd", "const"]
# Per task: its options, budgets, the extra WSD budgets of the anytime check, the target, and the
# optimizer groups (each its own grid: the options that differ from the others'). Prodigy runs at
# lr 1, its authors' default (its finder suggestion is checked apart: "prodigy-finder").
TASKS: dict[str, dict] = {
    "mnist1d": {"extra": [], "budgets": [5, 10, 20], "anytime": [15], "target": 0.94,
                "groups": [("sgd", ["sgd", "sfree_sgd"], ["--wd", "0", "--lr", "auto"]),
                           ("adamw", ["adamw", "sfree_adamw"], ["--lr", "auto"]),
                           ("prodigy", ["prodigy"], ["--lr", "1"])],
                "also": [("prodigy-finder", ["--opt", "prodigy", "--lr", "auto", "--schedule", "cos",
                                             "--epochs", "20"])]},
    "digits": {"extra": [], "budgets": [5, 10, 20], "anytime": [15], "target": 0.97,
               "groups": [("all", ["sgd", "adamw", "sfree_sgd", "sfree_adamw"], ["--lr", "auto"]),
                          ("prodigy", ["prodigy"], ["--lr", "1"])], "also": []},
    # The char-LM on one thread per run: torch's default (every core) in each of --jobs workers would
    # oversubscribe the cores (mnist1d and digits run on one thread by their task defaults).
    "charlm": {"extra": ["--threads", "1"], "budgets": [2, 4], "anytime": [1, 3], "target": 3.0,
               "groups": [("all", ["sgd", "adamw", "sfree_sgd", "sfree_adamw"], ["--lr", "auto"]),
                          ("prodigy", ["prodigy"], ["--lr", "1"])], "also": []},
}


def grids(task: str, seeds: int, jobs: int, out: str, draw: str = "end",
          charlm_opts: tuple[str, ...] = ("train_chars=200000",), first: int = 0) -> list[tuple[str, list[str]]]:
    """(name, ``onecycle`` arguments) of every grid for ``task``, seeds ``first..seeds-1``: per
    optimizer group the main grid and WSD at the anytime budgets, then the extra checks."""
    t = TASKS[task]
    extra = [*t["extra"], *(["--task-opts", *charlm_opts] if task == "charlm" else [])]
    common = ["--task", task, *extra, "--seed", *map(str, range(first, seeds)), "--target", str(t["target"]),
              "--jobs", str(jobs), "--out", out, "--draw", draw, "--quiet"]
    out_grids = []
    for tag, opts, own in t["groups"]:
        name = f"{task}-{tag}"
        out_grids.append((name, ["compare", *common, "--schedule", *SCHEDULES, "--opt", *opts, *own,
                                 "--epochs", *map(str, t["budgets"]), "--name", f"beyond-{name}"]))
        scheduled = [o for o in opts if not o.startswith("sfree_")]
        out_grids.append((f"{name}-anytime", ["compare", *common, "--schedule", "wsd", "--opt", *scheduled, *own,
                                              "--epochs", *map(str, t["anytime"]), "--name", f"beyond-{name}-anytime"]))
    for tag, args in t["also"]:
        out_grids.append((f"{task}-{tag}", ["compare", *common, *args, "--name", f"beyond-{task}-{tag}"]))
    return out_grids


def run(args: list[str]) -> Path:
    """``onecycle <args>`` in a subprocess; returns the compare folder it names."""
    print("$ onecycle " + " ".join(args), flush=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "onecycle", *args], capture_output=True, text=True)
    print(proc.stdout[-3000:], f"({time.perf_counter() - start:.0f} s)", flush=True)
    if proc.returncode != 0:
        sys.exit(f"onecycle failed ({proc.returncode}):\n{proc.stderr}")
    return Path(proc.stdout.strip().splitlines()[-1].removeprefix("compare folder: "))


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def collect(task: str, name: str, folder: Path, command: list[str]) -> list[dict]:
    """One record per run of a compare folder: its config, LR, per-epoch metric and validation loss,
    times, status."""
    data = _json(folder / "compare.json")
    rows = []
    for r in data["results"]:
        cell = Path(r["folder"])
        cfg, hist = _json(cell / "cell.json"), _json(cell / "history.json")
        metric = data.get("metric") or r.get("metric")
        split = r.get("time") or {}
        rows.append({"task": task, "grid": name, "schedule": cfg["schedule"], "opt": cfg["opt"], "wd": cfg["wd"],
                     "epochs": cfg["epochs"], "seed": cfg["seed"], "status": r["status"], "lr": r.get("lr"),
                     "metric": metric, "per_epoch": (hist.get("metrics") or {}).get(metric, []),
                     "val_loss": hist.get("val_losses", []), "train_seconds": split.get("training"),
                     "valid_seconds": split.get("validation"), "finder_seconds": split.get("finder"),
                     "seconds": r.get("seconds"), "error": r.get("error")})
    return rows


# ---- tables -----------------------------------------------------------------------------------------
NAMES = {"sgd": "SGD", "adamw": "AdamW", "prodigy": "Prodigy", "sfree_sgd": "schedule-free SGD",
         "sfree_adamw": "schedule-free AdamW"}
SCHED_NAMES = {"cos": "1cycle", "clr_beta": "clr_beta", "wsd": "WSD", "const": "const"}


def method(r: dict) -> str:
    if r["opt"].startswith("sfree_"):
        return NAMES[r["opt"]]
    name = f"{SCHED_NAMES[r['schedule']]} + {NAMES[r['opt']]}"
    if r["opt"] == "prodigy":
        name += " at the finder's LR" if r.get("grid", "").endswith("finder") else " (lr 1)"
    return name


def _fmt(metric: str, values: list[float], pct: bool) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "-"
    mean, sd = statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} ± {100 * sd:.2f}%" if pct else f"{mean:.3f} ± {sd:.3f}"


def _epochs_to(r: dict, target: float) -> int | None:
    low = lower_is_better(r["metric"])
    for i, v in enumerate(r["per_epoch"]):
        if v is not None and math.isfinite(v) and (v <= target if low else v >= target):
            return i + 1
    return None


def _methods(rows: list[dict]) -> list[str]:
    order = [(s, o, "") for o in ("sgd", "adamw") for s in SCHEDULES] + [
        ("const", "sfree_sgd", ""), ("const", "sfree_adamw", "")] + [(s, "prodigy", "") for s in SCHEDULES] + [
        ("cos", "prodigy", "finder")]
    present = {method(r) for r in rows}
    names = (method({"schedule": s, "opt": o, "grid": g}) for s, o, g in order)
    return [m for m in dict.fromkeys(names) if m in present]


def final_table(task: str, rows: list[dict]) -> str:
    budgets, target = TASKS[task]["budgets"], TASKS[task]["target"]
    main = [r for r in rows if r["task"] == task and not r["grid"].endswith("-anytime")]
    if not main:
        return ""
    metric = main[0]["metric"]
    pct = not lower_is_better(metric)
    head = ("| method | peak LR (mean) | " + " | ".join(f"{b} epochs" for b in budgets)
            + f" | epochs to {target:g} ({' / '.join(map(str, budgets))}) | seconds per run ({budgets[-1]} epochs) |")
    lines = [head, "|" + "---|" * (len(budgets) + 4)]
    for m in _methods(main):
        mine = [r for r in main if method(r) == m]
        cells, reach = [], []
        for b in budgets:
            runs = [r for r in mine if r["epochs"] == b]
            finals = [r["per_epoch"][-1] if r["status"] == "finished" and r["per_epoch"] else math.nan for r in runs]
            bad = sum(1 for v in finals if not math.isfinite(v))
            cells.append(_fmt(metric, finals, pct) + (f" ({bad} failed)" if bad else ""))
            hit = [e for e in (_epochs_to(r, target) for r in runs) if e is not None]
            reach.append(f"{statistics.mean(hit):.1f}" + (f" ({len(hit)}/{len(runs)})" if len(hit) < len(runs) else "")
                         if hit else "never")
        lrs = [r["lr"] for r in mine if r.get("lr")]
        lr = math.exp(statistics.mean(math.log(v) for v in lrs)) if lrs else math.nan
        long = [r for r in mine if r["epochs"] == budgets[-1] and r.get("train_seconds") is not None]
        secs = statistics.mean(r["train_seconds"] + (r["valid_seconds"] or 0) for r in long) if long else math.nan
        fsecs = statistics.mean(r["finder_seconds"] or 0 for r in long) if long else math.nan
        lines.append(f"| {m} | {lr:.3g} | " + " | ".join(cells) + f" | {' / '.join(reach)} | {secs:.1f} "
                     f"(+ finder {fsecs:.1f}) |")
    return "\n".join(lines)


def anytime_table(task: str, rows: list[dict]) -> str:
    budgets, anytime = TASKS[task]["budgets"], TASKS[task]["anytime"]
    full = budgets[-1]
    stops = sorted({*anytime, *(b for b in budgets if b < full)})
    mine = [r for r in rows if r["task"] == task]
    if not mine:
        return ""
    metric = mine[0]["metric"]
    pct = not lower_is_better(metric)
    lines = ["| method | " + " | ".join(f"stop at {s} ({s / full:.0%})" for s in stops) + f" | {full} (100%) |",
             "|" + "---|" * (len(stops) + 2)]
    for m in _methods(mine):
        runs = [r for r in mine if method(r) == m and r["status"] == "finished"]
        cells = []
        for s in [*stops, full]:
            if runs and runs[0]["schedule"] == "wsd":  # cooled down at s: the WSD run of s epochs
                values = [r["per_epoch"][-1] for r in runs if r["epochs"] == s and r["per_epoch"]]
            else:  # as it stands at epoch s of the full-budget run
                values = [r["per_epoch"][s - 1] for r in runs if r["epochs"] == full and len(r["per_epoch"]) >= s]
            cells.append(_fmt(metric, values, pct))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tables(records: list[dict]) -> str:
    out = []
    for task in TASKS:
        final = final_table(task, records)
        if final:
            seeds = len({r["seed"] for r in records if r["task"] == task})
            out += [f"### {task}: final metric ({seeds} seeds)", "", final, "", f"### {task}: anytime", "",
                    anytime_table(task, records), ""]
    return "\n".join(out)


def _save(tasks: list[str], studied: dict, commands: dict, runs: list[dict]) -> None:
    """Writes this call's tasks into the raw results, keeping the other tasks' records as the file
    holds them now: two calls on different tasks may run at once."""
    now = _json(RAW)
    mine = set(tasks)
    merged = {"tasks": {**{k: v for k, v in now.get("tasks", {}).items() if k not in mine},
                        **{k: v for k, v in studied.items() if k in mine}},
              "commands": {**{k: v for k, v in now.get("commands", {}).items() if k.split("-")[0] not in mine},
                           **{k: v for k, v in commands.items() if k.split("-")[0] in mine}},
              "runs": [*(r for r in now.get("runs", []) if r["task"] not in mine),
                       *(r for r in runs if r["task"] in mine)]}
    RAW.parent.mkdir(parents=True, exist_ok=True)
    tmp = RAW.with_suffix(".tmp")
    tmp.write_text(json.dumps(merged, indent=1))
    tmp.replace(RAW)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="runs/beyond")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--draw", default="end", choices=["end", "cells"], help="the grids' --draw")
    ap.add_argument("--charlm-opts", nargs="+", default=["train_chars=200000"], metavar="KEY=VALUE",
                    help="the char-LM's --task-opts")
    ap.add_argument("--first-seed", type=int, default=0,
                    help="run seeds FIRST..SEEDS-1 only, keeping the saved runs of the seeds before (more seeds later)")
    ap.add_argument("--tables", action="store_true", help="print the tables from the saved raw results only")
    args = ap.parse_args()
    saved = _json(RAW)
    if args.tables:
        print(tables(saved.get("runs", [])))
        return 0
    first = args.first_seed
    runs = [r for r in saved.get("runs", []) if r["task"] not in args.tasks or r["seed"] < first]
    commands = {k: v for k, v in saved.get("commands", {}).items() if k.split("-")[0] not in args.tasks or first}
    studied, start = dict(saved.get("tasks", {})), time.perf_counter()
    for task in args.tasks:
        t_task, load = time.perf_counter(), [os.getloadavg()[0]]
        before = studied.get(task, {}) if first else {}  # the earlier seeds' time and load, added to
        for name, cmd in grids(task, args.seeds, args.jobs, args.out, args.draw, tuple(args.charlm_opts), first):
            t0 = time.perf_counter()
            folder = run(cmd)
            load.append(os.getloadavg()[0])
            commands[name + (f" (seeds {first}-{args.seeds - 1})" if first else "")] = {
                "command": "onecycle " + " ".join(cmd), "folder": str(folder),
                              "seconds": round(time.perf_counter() - t0)}
            runs += collect(task, name, folder, cmd)
            studied[task] = {"seeds": args.seeds,
                             "seconds": before.get("seconds", 0) + round(time.perf_counter() - t_task),
                             "load_1min": before.get("load_1min", []) + [round(v, 1) for v in load],
                             **({"task_opts": args.charlm_opts} if task == "charlm" else {})}
            _save(args.tasks, studied, commands, runs)
    print(f"study: {time.perf_counter() - start:.0f} s")
    print(tables(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
