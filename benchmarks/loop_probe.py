"""The loop's own cost, on the probe where it shows most: a linear 40->10 model on MNIST-1D at batch
32, where a step is ~100 us of torch work and any Python around it counts.

Both contenders train the same model from the same init on the same ``TensorLoader`` (MNIST-1D's
4000 training signals), with the same optimizer (SGD, momentum 0.9, ``foreach=True``: the Learner's
"sgd") and OneCycleLR's shape (torch's ``OneCycleLR`` for the hand-written loop,
``schedules.torch_one_cycle`` for the fit), no validation, one torch thread. Ours is
``Learner.fit_sched`` with its defaults (the NaN guard on).

Wall time: for each seed a fresh process runs the two alternately (``--reps`` times each, after a
warm-up, the order swapped every rep) and reports each one's median and the median of the reps'
ratios (each rep's two runs are adjacent, so a machine that changes speed between reps cancels
out); the ratio ours / hand-written is printed per seed, then the median and range over seeds.
Where the difference goes (``--phases``): the same alternation, each contender reading the loader
through a wrapper that notes when each batch arrives: the median (and lower quartile) of the
intervals between batches inside an epoch, over every batch of every rep, is the per-batch cost; the
rest of a run (setup, epoch ends and starts, teardown) is its total minus its in-epoch intervals.
Instructions (``--instructions``, needs valgrind): callgrind counts each contender's instructions
per batch (5 epochs minus 1, so imports and setup cancel), a figure the machine's load cannot move;
it leaves out the fit's fixed cost and weighs Python's instructions like torch's, which run
faster: wall time is the target's measure.

    python benchmarks/loop_probe.py [--seeds 0 1 2] [--reps 9] [--epochs 3] [--phases] [--instructions]

Target: ours / hand-written <= 1.05.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

import torch

from _hand import hand_written  # benchmarks/, the script's folder


def loader(seed: int):
    from onecycle.data import TensorLoader
    from onecycle.tasks import load_task
    x, y = load_task("mnist1d", device="cpu").train_dl.tensors
    return TensorLoader(x.reshape(len(x), -1), y, batch_size=32, shuffle=True, seed=seed)


def hand(model, dl, epochs: int, lr: float = 0.1) -> None:
    """The benchmarks' hand-written loop (``_hand.py``), with the Learner's "sgd" (``foreach=True``)."""
    hand_written(model, dl, None, epochs, lr, foreach=True)


def ours(model, dl, epochs: int, lr: float = 0.1) -> None:
    import onecycle as oc
    learn = oc.Learner(model, dl, None, quiet=True, device="cpu")
    policy = oc.schedules.torch_one_cycle(max(epochs, 1) * len(dl))
    if epochs:
        learn.fit_sched(epochs, lr, policy.lr, policy.mom)


CONTENDERS = {"hand": hand, "ours": ours}


class Stamped:
    """``dl`` as it is, noting ``perf_counter`` as each batch is handed out (``--phases``)."""

    def __init__(self, dl) -> None:
        self.dl, self.stamps = dl, []

    def __len__(self) -> int:
        return len(self.dl)

    def set_epoch(self, epoch: int) -> None:
        self.dl.set_epoch(epoch)

    def __iter__(self):
        epoch = []
        self.stamps.append(epoch)
        for batch in self.dl:
            epoch.append(time.perf_counter())
            yield batch


def child(seed: int, reps: int, epochs: int, phases: bool) -> None:
    """One process: both contenders alternately; prints {"hand": [s...], "ours": [s...], "batches": n}
    (with ``phases``, also each one's in-epoch batch intervals, "<name>_batch", and the rest of each
    run, "<name>_rest")."""
    torch.set_num_threads(1)
    dl = loader(seed)
    torch.manual_seed(seed)
    init = torch.nn.Linear(40, 10).state_dict()
    out = {"hand": [], "ours": [], "hand_batch": [], "ours_batch": [], "hand_rest": [], "ours_rest": []}

    def run(name: str) -> float:
        model = torch.nn.Linear(40, 10)
        model.load_state_dict(init)
        data = Stamped(dl) if phases else dl
        start = time.perf_counter()
        CONTENDERS[name](model, data, epochs)
        seconds = time.perf_counter() - start
        if phases:
            gaps = [b - a for epoch in data.stamps for a, b in zip(epoch, epoch[1:])]
            out[f"{name}_batch"] += gaps
            out[f"{name}_rest"].append(seconds - sum(gaps))
        return seconds

    run("ours"), run("hand")  # warm-up
    for key in out:
        out[key] = []
    for r in range(reps):
        for name in ("hand", "ours") if r % 2 == 0 else ("ours", "hand"):
            out[name].append(run(name))
    ratios = [o / h for o, h in zip(out["ours"], out["hand"])]
    print(json.dumps({**out, "batches": epochs * len(dl), "paired": statistics.median(ratios)}))


def quartiles(values: list[float]) -> tuple[float, float]:
    """(lower quartile, median)."""
    values = sorted(values)
    return values[len(values) // 4], values[len(values) // 2]


def count(name: str, epochs: int) -> int:
    """Instructions of one process training ``name`` for ``epochs`` epochs (callgrind)."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
                          "--count", name, "--epochs", str(epochs)], capture_output=True, text=True, env=env)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if not found:
        raise RuntimeError(out.stderr[-2000:])
    return int(found.group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--phases", action="store_true", help="split the difference into per batch and the rest")
    ap.add_argument("--instructions", action="store_true", help="also count instructions per batch (valgrind)")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--count", choices=list(CONTENDERS), default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        return child(args.child, args.reps, args.epochs, args.phases)
    if args.count is not None:  # under callgrind: train, nothing else
        torch.set_num_threads(1)
        dl = loader(0)
        torch.manual_seed(0)
        return CONTENDERS[args.count](torch.nn.Linear(40, 10), dl, args.epochs)
    print(f"linear 40->10, MNIST-1D, batch 32, TensorLoader, SGD, {args.epochs} epochs, median of {args.reps} "
          f"per seed, one torch thread; load {os.getloadavg()[0]:.2f}", flush=True)
    ratios, paired = [], []
    for seed in args.seeds:
        out = subprocess.run([sys.executable, __file__, "--child", str(seed), "--reps", str(args.reps),
                              "--epochs", str(args.epochs)] + ["--phases"] * args.phases,
                             capture_output=True, text=True, check=True)
        t = json.loads(out.stdout.strip().splitlines()[-1])
        h, o = statistics.median(t["hand"]), statistics.median(t["ours"])
        ratios.append(o / h)
        paired.append(t["paired"])
        print(f"seed {seed}: hand {h / t['batches'] * 1e6:6.1f} us/batch, ours {o / t['batches'] * 1e6:6.1f} "
              f"us/batch, ours/hand {o / h:.3f} (median of the reps' ratios {t['paired']:.3f})")
        if args.phases:
            (h25, hb), (o25, ob) = quartiles(t["hand_batch"]), quartiles(t["ours_batch"])
            hr, orest = statistics.median(t["hand_rest"]), statistics.median(t["ours_rest"])
            print(f"    per batch (median, lower quartile): hand {hb * 1e6:6.1f} ({h25 * 1e6:.1f}) us, ours "
                  f"{ob * 1e6:6.1f} ({o25 * 1e6:.1f}) us: +{(ob - hb) * 1e6:.1f} ({(o25 - h25) * 1e6:.1f}) us, "
                  f"{(ob - hb) * t['batches'] / h:+.1%} of the hand loop's run; outside batches: hand "
                  f"{hr * 1e3:.2f} ms, ours {orest * 1e3:.2f} ms: {(orest - hr) / h:+.1%}")
    print(f"ours/hand: median {statistics.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}; "
          f"rep by rep: median {statistics.median(paired):.3f}, range {min(paired):.3f}-{max(paired):.3f} "
          f"(target <= 1.05); load {os.getloadavg()[0]:.2f} at the end")
    if args.instructions:
        if shutil.which("valgrind") is None:
            raise SystemExit("--instructions needs valgrind")
        per = {name: (count(name, 5) - count(name, 1)) / (4 * 125) for name in CONTENDERS}
        print(f"instructions per batch: hand {per['hand']:.0f}, ours {per['ours']:.0f}, "
              f"ours/hand {per['ours'] / per['hand']:.3f}")


if __name__ == "__main__":
    main()
