"""MNIST-1D with the built-in CNN under 1cycle, through the command line, with the defaults a user gets
from ``onecycle fit --task mnist1d --lr auto``; and the super-convergence check: a constant LR at the
same peak (the same finder, the same seed) for up to twice the budget.

    python benchmarks/reproduce_mnist1d.py [--seeds 5] [--jobs 2] [--out runs] [--sweep]

Runs one grid (``onecycle compare``: schedule cos/const x 10/20/40 epochs x seeds), prints its table
and the figures, and checks them: 1cycle >= 95.0% mean test accuracy in 20 epochs and >= 94% in 10;
the constant LR's mean below 94% in 40. Exit code 1 if a check fails. The overlay of validation loss
and accuracy per configuration is ``<compare folder>/compare.png`` (a constant LR's first 10 and 20
epochs are exactly its 40-epoch run's, so those three lines coincide). ``--sweep`` runs instead the
grid the task's defaults were chosen from (optimizer x weight decay x CNN width x batch size).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path


def grid_command(seeds: int, jobs: int, out: str) -> list[str]:
    return ["compare", "--task", "mnist1d", "--lr", "auto", "--schedule", "cos", "const", "--epochs", "10", "20",
            "40", "--seed", *map(str, range(seeds)), "--jobs", str(jobs), "--target", "0.94", "--out", out,
            "--name", "reproduce-mnist1d", "--quiet"]


# How the task's defaults were chosen: optimizer x weight decay x CNN width x batch size, 1cycle with
# the finder's LR, 20 epochs. Everything a grid varies is spelled out, so task defaults play no part.
SWEEP = """\
task = "mnist1d"
lr = "auto"
epochs = 20
target = 0.95
[grid]
opt = ["sgd", "adamw"]
wd = [0.0, 0.1]
model_opts = [{channels = 25}, {channels = 64}]
batch_size = [128, 64]
seed = [%s]
"""


def sweep(seeds: int, jobs: int, out: str) -> int:
    """The grid behind the mnist1d defaults (``--sweep``); prints its table."""
    grid = Path(out) / "mnist1d-defaults-sweep.toml"
    grid.parent.mkdir(parents=True, exist_ok=True)
    grid.write_text(SWEEP % ", ".join(map(str, range(seeds))))
    cmd = ["compare", "--grid", str(grid), "--jobs", str(jobs), "--out", out, "--name", "mnist1d-defaults", "--quiet"]
    print(f"$ onecycle {' '.join(cmd)}   # {grid}:\n{grid.read_text()}")
    run(cmd)
    return 0


def run(args: list[str]) -> Path:
    """``onecycle <args>`` in a subprocess; prints its output, returns the compare folder it names."""
    proc = subprocess.run([sys.executable, "-m", "onecycle", *args], capture_output=True, text=True)
    print(proc.stdout, end="")
    if proc.returncode != 0:
        sys.exit(f"onecycle failed ({proc.returncode}):\n{proc.stderr}")
    return Path(proc.stdout.strip().splitlines()[-1].removeprefix("compare folder: "))


def accuracies(folder: Path, schedule: str, epochs: int) -> tuple[list[float], list[float], list[float]]:
    """Final accuracy, best epoch's accuracy and peak LR of each seed of one configuration."""
    data = json.loads((folder / "compare.json").read_text())
    rows = [r for r in data["results"] if r["label"]["schedule"] == schedule and r["label"]["epochs"] == epochs]
    failed = [r for r in rows if r["status"] != "finished"]
    if failed:
        sys.exit(f"{len(failed)} runs of {schedule}/{epochs} did not finish: {failed[0].get('error')}")
    return ([r["final"]["accuracy"] for r in rows], [r["best"]["accuracy"] for r in rows], [r["lr"] for r in rows])


def pct(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} +- {100 * sd:.2f}%"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="runs")
    ap.add_argument("--sweep", action="store_true", help="run the grid the task's defaults were chosen from")
    args = ap.parse_args()
    if args.sweep:
        return sweep(args.seeds, args.jobs, args.out)
    cmd = grid_command(args.seeds, args.jobs, args.out)
    print("$ onecycle " + " ".join(cmd))
    folder = run(cmd)
    meta = json.loads(next(folder.glob("*/config.json")).read_text())["config"]
    print(f"\nMNIST-1D, defaults of `onecycle fit --task mnist1d --lr auto`: opt {meta['opt']}, wd {meta['wd']}, "
          f"batch {meta['batch_size']}, model {meta['model']} {meta['model_opts']}, {args.seeds} seeds")
    checks = []
    for schedule, epochs, want in (("cos", 10, 0.94), ("cos", 20, 0.95), ("cos", 40, None), ("const", 10, None),
                                   ("const", 20, None), ("const", 40, -0.94)):
        final, best, lrs = accuracies(folder, schedule, epochs)
        line = f"  {schedule:<5} {epochs:>2} epochs: final {pct(final)}, best epoch {pct(best)}, peak LR " \
               f"{statistics.mean(lrs):.3g}"
        if want is not None:  # want < 0: the mean must stay below -want
            ok = statistics.mean(final) >= want if want > 0 else statistics.mean(final) < -want
            checks.append(ok)
            line += f"   [{'PASS' if ok else 'FAIL'}: mean {'>=' if want > 0 else '<'} {100 * abs(want):.0f}%]"
            if want < 0:
                line += f" ({sum(b >= -want for b in best)} of {len(best)} seeds touched it on some epoch)"
        print(line)
    print(f"overlay: {folder / 'compare.png'}\nreport:  {folder / 'report.html'}")
    return 0 if all(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
