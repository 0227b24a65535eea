"""LR finder cost: validation at every step against training only (MNIST-1D CNN, num_it=100).

Runs alternate (train-only, validated, train-only, ...) so that drift in machine load hits both
alike; the medians and their ratio are printed. The target: one validation batch per step costs at
most 1.5x the training-only run. torch-lr-finder's ``range_test(val_loader=...)`` (which runs the
whole validation set at every step) is timed too when it is installed.

    python benchmarks/lr_find.py [--rounds 5] [--num-it 100] [--val-batches 1] [--threads N]

On a busy machine pass ``--threads 1``: oversubscribed intra-op threads make timings meaningless.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from onecycle import Learner
from onecycle.models import create_model
from onecycle.tasks import load_task


def make_learner(task, seed: int = 0) -> Learner:
    torch.manual_seed(seed)
    model = create_model(task.default_model, task.in_shape, task.n_out)
    return Learner(model, task.train_dl, task.valid_dl, task.loss_fn, metrics=task.metrics, quiet=True)


def time_find(learn: Learner, num_it: int, with_valid: bool, val_batches: int) -> float:
    start = time.perf_counter()
    res = learn.lr_find(num_it=num_it, with_valid=with_valid, val_batches=val_batches, stop_div=False)
    elapsed = time.perf_counter() - start
    assert len(res.losses) == num_it, res.stop_reason
    return elapsed


def time_torch_lr_finder(task, num_it: int) -> float | None:
    try:
        from torch_lr_finder import LRFinder
    except ImportError:
        return None
    torch.manual_seed(0)
    model = create_model(task.default_model, task.in_shape, task.n_out)
    opt = torch.optim.SGD(model.parameters(), lr=1e-7, momentum=0.9)
    finder = LRFinder(model, opt, task.loss_fn)
    start = time.perf_counter()
    finder.range_test(task.train_dl, val_loader=task.valid_dl, end_lr=10, num_iter=num_it)
    elapsed = time.perf_counter() - start
    finder.reset()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--num-it", type=int, default=100)
    parser.add_argument("--val-batches", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    task = load_task("mnist1d")
    learn = make_learner(task)
    time_find(learn, 10, True, 1)  # warm-up: allocator, kernels, lazy imports
    times: dict[str, list[float]] = {"train only": [], "validated": []}
    for _ in range(args.rounds):
        times["train only"].append(time_find(learn, args.num_it, False, args.val_batches))
        times["validated"].append(time_find(learn, args.num_it, True, args.val_batches))
    base = statistics.median(times["train only"])
    print(f"MNIST-1D CNN, batch {task.train_dl.batch_size}, num_it={args.num_it}, "
          f"val_batches={args.val_batches}, {args.rounds} alternating rounds, {torch.get_num_threads()} threads")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"  {name:<11} median {med:.3f} s  ({med / args.num_it * 1e3:.2f} ms/it)  "
              f"ratio {med / base:.2f}x  runs {', '.join(f'{v:.3f}' for v in values)}")
    other = time_torch_lr_finder(task, args.num_it)
    if other is None:
        print("  torch-lr-finder is not installed: its range_test(val_loader=...) was not timed")
    else:
        print(f"  torch-lr-finder range_test(val_loader=...) {other:.3f} s  ratio {other / base:.2f}x")


if __name__ == "__main__":
    main()
