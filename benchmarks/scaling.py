"""Loop overhead across model sizes and batch sizes: ``fit_sched`` vs a hand-written loop.

Both contenders train the same model (same init), on MNIST-1D, with the same loader object (onecycle's
``TensorLoader`` by default, ``--loader dataloader`` for torch's ``DataLoader(TensorDataset)``), SGD
with ``OneCycleLR``'s schedule (``torch_one_cycle`` for us), no validation: the training loop only.
Runs alternate in one process; each cell is the median of ``--reps`` runs of ``--epochs`` epochs.
The widest models train on a prefix of the data (the ~5M CNN at three batch sizes) to keep cells short.

    python benchmarks/scaling.py [--epochs 2] [--reps 5] [--loader tensor|dataloader] [--on-nan raise|off]
        [--models linear cnn-25 ...] [--batch-sizes 32 128 ...]

Prints hand-written time / ours (throughput ratio; > 1: ours faster). Target: the tiny linear model
at least 0.9 at every batch size.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

import _hand  # benchmarks/, the script's folder
import onecycle as oc
from onecycle.data import TensorLoader
from onecycle.models import create_model
from onecycle.tasks import load_task

# name -> (model kwargs, training samples used, batch sizes: None = all of --batch-sizes)
MODELS = {
    "linear": (dict(name="mlp", hidden=()), 4000, None),
    "cnn-25": (dict(name="cnn", channels=25), 4000, None),
    "cnn-100": (dict(name="cnn", channels=100), 4000, None),
    "cnn-300": (dict(name="cnn", channels=300), 2048, None),
    "cnn-900": (dict(name="cnn", channels=900), 1024, (32, 256, 1024)),  # ~10 ms/sample: three cells
}


def hand_written(model, dl, epochs, lr):
    _hand.hand_written(model, dl, None, epochs, lr)  # training only


def ours(model, dl, epochs, lr, on_nan="raise"):
    learn = oc.Learner(model, dl, None, quiet=True, device="cpu")
    policy = oc.schedules.torch_one_cycle(epochs * len(dl))
    learn.fit_sched(epochs, lr, policy.lr, policy.mom, on_nan=on_nan)


def make_loader(kind, x, y, bs):
    if kind == "tensor":
        return TensorLoader(x, y, batch_size=bs, shuffle=True)
    return DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=True)


def cell(spec, n, x, y, bs, args) -> tuple[float, float, int]:
    kw = dict(spec)
    name = kw.pop("name")
    dl = make_loader(args.loader, x[:n], y[:n], bs)
    init = create_model(name, (1, 40), 10, **kw).state_dict()
    n_params = sum(t.numel() for t in init.values())

    def run(fn) -> float:
        model = create_model(name, (1, 40), 10, **kw)
        model.load_state_dict(init)
        start = time.perf_counter()
        fn(model, dl, args.epochs, args.lr, **({"on_nan": args.on_nan} if fn is ours else {}))
        return time.perf_counter() - start

    times = {hand_written: [], ours: []}
    run(ours), run(hand_written)  # warm-up (allocator, kernels)
    for r in range(args.reps):
        for fn in (hand_written, ours) if r % 2 == 0 else (ours, hand_written):
            times[fn].append(run(fn))
    return statistics.median(times[hand_written]), statistics.median(times[ours]), n_params


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--loader", choices=["tensor", "dataloader"], default="tensor")
    ap.add_argument("--on-nan", choices=["raise", "skip", "off"], default="raise", help="ours' non-finite check")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256, 512, 1024])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = ap.parse_args()
    x, y = load_task("mnist1d", device="cpu").train_dl.tensors
    print(f"MNIST-1D, {args.epochs} epochs, {args.loader} loader for both, ours on_nan={args.on_nan!r}, "
          f"median of {args.reps}; "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'model':>8} {'params':>9} {'samples':>7} {'batch':>5} {'steps':>5} {'hand s':>8} {'ours s':>8} "
          f"{'ratio':>6}")
    worst_tiny = float("inf")
    for m in args.models:
        spec, n, sizes = MODELS[m]
        for bs in sizes or args.batch_sizes:
            hand, mine, n_params = cell(spec, n, x, y, bs, args)
            steps = args.epochs * -(-n // bs)
            print(f"{m:>8} {n_params:>9,} {n:>7} {bs:>5} {steps:>5} {hand:>8.3f} {mine:>8.3f} {hand / mine:>6.3f}",
                  flush=True)
            if m == "linear":
                worst_tiny = min(worst_tiny, hand / mine)
    if "linear" in args.models:
        verdict = "met" if worst_tiny >= 0.9 else "MISSED"
        print(f"tiny linear model, worst ratio over batch sizes: {worst_tiny:.3f} (target >= 0.9: {verdict})")


if __name__ == "__main__":
    main()
