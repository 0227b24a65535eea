"""The seed thread's question -- where does 1cycle work, with which optimizer, and what makes high LRs
possible on an LSTM? -- answered through ``onecycle compare``:

1. SGD vs AdamW vs LARS under 1cycle, each at its own finder's suggestion (a finder per optimizer:
   LARS's usable peak is far above SGD's), on MNIST-1D (CNN) and on digits (MLP), no weight decay so
   the optimizers alone differ, gradient statistics recorded.
2. The character LM (AWD-LSTM on the standard library's sources, a 200k-character budget) with SGD at
   a moderate and a high peak LR, with and without gradient clipping 0.25 (the thread: "the key
   setting that changed everything was the gradient clipping").

    python benchmarks/thread_question.py [--seeds 3] [--jobs 2] [--out runs] [--lm-epochs 4] [--lm-lrs 5 30]

Prints each grid's table (mean +- sd over seeds) and where its overlay plot and report are. Takes
about 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path


def run(args: list[str]) -> Path:
    """``onecycle <args>`` in a subprocess; prints the command and its table, returns the compare folder."""
    print("$ onecycle " + " ".join(args), flush=True)
    proc = subprocess.run([sys.executable, "-m", "onecycle", *args], capture_output=True, text=True)
    print(proc.stdout, flush=True)
    if proc.returncode != 0:
        sys.exit(f"onecycle failed ({proc.returncode}):\n{proc.stderr}")
    return Path(proc.stdout.strip().splitlines()[-1].removeprefix("compare folder: "))


def grids(seeds: int, jobs: int, out: str, lm_epochs: int, lm_lrs: list[float]) -> dict[str, list[str]]:
    common = ["--jobs", str(jobs), "--out", out, "--quiet"]
    seed_list = [str(s) for s in range(seeds)]
    opts = ["--opt", "sgd", "adamw", "lars", "--lr", "auto", "--end-lr", "100", "--wd", "0", "--epochs", "20",
            "--seed", *seed_list, "--grad-stats"]
    return {
        "mnist1d": ["compare", "--task", "mnist1d", *opts, "--target", "0.9", "--name", "thread-mnist1d", *common],
        "digits": ["compare", "--task", "digits", *opts, "--target", "0.95", "--name", "thread-digits", *common],
        "charlm": ["compare", "--task", "charlm", "--task-opts", "train_chars=200000", "--opt", "sgd", "--lr",
                   *map(str, lm_lrs), "--clip", "0", "0.25", "--epochs", str(lm_epochs), "--seed", *seed_list[:2],
                   "--target", "3.0", "--name", "thread-charlm", *common],
    }


def answer(name: str, folder: Path) -> str:
    """One line per configuration: final metric mean and the runs that failed (diverged)."""
    data = json.loads((folder / "compare.json").read_text())
    metric, groups = data["metric"], {}
    for r in data["results"]:
        key = " ".join(f"{k}={v}" for k, v in r["label"].items() if k != "seed")
        groups.setdefault(key, []).append(r)
    lines = []
    for key, runs in groups.items():
        ok = [r["final"][metric] for r in runs if r["status"] == "finished"]
        lrs = [r["lr"] for r in runs if r.get("lr")]
        failed = [r.get("error") or r["status"] for r in runs if r["status"] != "finished"]
        line = f"  {name:<8} {key:<22} final {metric} " + (f"{statistics.mean(ok):.4f}" if ok else "-")
        line += f" ({len(ok)}/{len(runs)} runs finished"
        line += f", peak LR {statistics.mean(lrs):.3g})" if lrs else ")"
        lines.append(line + (f"; failed: {failed[0]}" if failed else ""))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="runs")
    ap.add_argument("--lm-epochs", type=int, default=4)
    ap.add_argument("--lm-lrs", type=float, nargs="+", default=[5.0, 30.0])
    args = ap.parse_args()
    folders = {name: run(cmd) for name, cmd in grids(args.seeds, args.jobs, args.out, args.lm_epochs,
                                                      args.lm_lrs).items()}
    print("Summary (final value, mean over seeds):")
    for name, folder in folders.items():
        print(answer(name, folder))
        print(f"  overlay: {folder / 'compare.png'}   report: {folder / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
