"""SGD, AdamW, LARS and LAMB under the same 1cycle budget on the MNIST-1D CNN.

For each optimizer and each of three peaks, 3 seeds at the full budget give final accuracy mean and
spread (a one-seed sweep is misled by SGD's cliff: above ~0.3 some seeds collapse). Step cost is
measured two ways, contenders interleaved: a whole training iteration (forward, backward, step)
and ``optimizer.step()`` alone.

    python benchmarks/optimizers.py [--epochs 20] [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import onecycle as oc
from onecycle.models import create_model
from onecycle.tasks import load_task

PEAKS = {"sgd": (0.1, 0.25, 0.5), "adamw": (0.01, 0.02, 0.05), "lars": (3.0, 10.0, 30.0), "lamb": (0.01, 0.03, 0.1)}


def train(opt: str, lr: float, epochs: int, seed: int) -> float:
    task = load_task("mnist1d", seed=seed)  # the seed sets the shuffle; the data are the published set
    torch.manual_seed(seed)
    model = create_model(task.default_model, task.in_shape, task.n_out)
    learn = oc.Learner(model, task.train_dl, task.valid_dl, task.loss_fn, opt=opt, metrics=task.metrics,
                       wd=1e-4 if opt in ("lars", "lamb") else 0.0, quiet=True)
    learn.fit_one_cycle(epochs, lr)
    return 100 * learn.recorder.metrics["accuracy"][-1]


def step_costs(task, opts, reps: int = 30) -> dict[str, tuple[float, float]]:
    """Median time of a training iteration and of ``opt.step()`` alone, per optimizer."""
    learners = {}
    for opt in opts:
        torch.manual_seed(0)
        model = create_model(task.default_model, task.in_shape, task.n_out)
        learn = oc.Learner(model, task.train_dl, loss_fn=task.loss_fn, opt=opt, quiet=True)
        learn.create_opt()
        learners[opt] = learn
    batch = next(iter(task.train_dl))
    times = {o: ([], []) for o in opts}
    for _ in range(reps):
        for opt, learn in learners.items():
            t0 = time.perf_counter()
            learn.forward(batch, learn.model)[1].backward()  # move, forward, loss, backward
            t1 = time.perf_counter()
            learn.opt.step()
            t2 = time.perf_counter()
            learn.opt.zero_grad(set_to_none=True)
            times[opt][0].append(t2 - t0)
            times[opt][1].append(t2 - t1)
            del t1
    return {o: (statistics.median(a), statistics.median(b)) for o, (a, b) in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    task = load_task("mnist1d")
    costs = step_costs(task, list(PEAKS))
    print(f"{'optimizer':9} {'peak':>6} {'accuracy %':>14} {'iteration':>10} {'x SGD':>6} {'opt.step':>9} {'x SGD':>6}")
    it0, st0 = costs["sgd"]
    for opt, peaks in PEAKS.items():
        it, st = costs[opt]
        for lr in peaks:
            accs = [train(opt, lr, args.epochs, seed) for seed in range(args.seeds)]
            print(f"{opt:9} {lr:6g} {statistics.mean(accs):8.1f} +- {statistics.stdev(accs):4.1f} "
                  f"{it * 1e3:8.2f}ms {it / it0:6.2f} {st * 1e6:7.0f}us {st / st0:6.2f}", flush=True)

if __name__ == "__main__":
    main()
