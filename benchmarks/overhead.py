"""Throughput of ``Learner.fit_one_cycle`` against a hand-written PyTorch loop with ``OneCycleLR``.

Same model, data, DataLoader, optimizer (SGD, momentum cycled), per-epoch validation; runs
alternate in one process and the median of each contender is compared, so machine noise hits both.

    python benchmarks/overhead.py [--task mnist1d] [--epochs 10] [--reps 15]

Prints: ours / hand-written throughput with the same DataLoader and the same optimizer layout (one
param group, as the hand-written loop has; target >= 0.95), the same with the model's own layer
groups (the CNN has 4: torch's SGD steps each group separately, a cost of the groups, not of the
loop), and with onecycle's in-memory TensorLoader against the hand-written DataLoader loop
(target >= 1.3).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

import onecycle as oc
from _hand import hand_written  # benchmarks/, the script's folder
from onecycle.data import TensorLoader
from onecycle.models import create_model
from onecycle.tasks import load_task


def ours(model, train_dl, valid_dl, epochs, lr, groups=None):
    learn = oc.Learner(model, train_dl, valid_dl, metrics=[oc.metrics.accuracy], quiet=True, device="cpu",
                       groups=groups)
    policy = oc.schedules.torch_one_cycle(epochs * len(train_dl))
    learn.fit_sched(epochs, lr, policy.lr, policy.mom)


def ours_one_group(model, train_dl, valid_dl, epochs, lr):
    ours(model, train_dl, valid_dl, epochs, lr, groups=[model])  # one param group, as the hand-written loop


def timed(fn, make_model, train_dl, valid_dl, epochs, lr) -> float:
    torch.manual_seed(0)
    model = make_model()
    start = time.perf_counter()
    fn(model, train_dl, valid_dl, epochs, lr)
    return time.perf_counter() - start


def compare(name, contenders, reps) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(reps):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for k in order:
            times[k].append(contenders[k]())
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{name}: " + ", ".join(f"{k} {m:.3f}s" for k, m in med.items()))
    return med


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="mnist1d")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--lr", type=float, default=0.1)
    args = ap.parse_args()
    task = load_task(args.task, device="cpu")
    x, y = task.train_dl.tensors
    xv, yv = task.valid_dl.tensors
    bs = task.train_dl.batch_size
    dl = DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=True)
    vdl = DataLoader(TensorDataset(xv, yv), batch_size=bs)
    fast, vfast = TensorLoader(x, y, batch_size=bs, shuffle=True), TensorLoader(xv, yv, batch_size=bs)

    def make_model():
        return create_model(task.default_model, task.in_shape, task.n_out)

    e, lr = args.epochs, args.lr
    run = {
        "hand-written + DataLoader": lambda: timed(hand_written, make_model, dl, vdl, e, lr),
        "onecycle + DataLoader": lambda: timed(ours_one_group, make_model, dl, vdl, e, lr),
        "onecycle + DataLoader, layer groups": lambda: timed(ours, make_model, dl, vdl, e, lr),
        "onecycle + TensorLoader": lambda: timed(ours_one_group, make_model, fast, vfast, e, lr),
    }
    timed(ours, make_model, fast, vfast, 1, lr)  # warm-up
    med = compare(f"{args.task}, {e} epochs, batch {bs}, median of {args.reps}", run, args.reps)
    hand = med["hand-written + DataLoader"]
    print(f"throughput ratio, same DataLoader, one param group (target >= 0.95): "
          f"{hand / med['onecycle + DataLoader']:.3f}")
    print(f"throughput ratio, same DataLoader, the model's layer groups: "
          f"{hand / med['onecycle + DataLoader, layer groups']:.3f}")
    print(f"throughput ratio, TensorLoader vs hand-written DataLoader loop (target >= 1.3): "
          f"{hand / med['onecycle + TensorLoader']:.3f}")


if __name__ == "__main__":
    main()
