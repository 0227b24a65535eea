"""Data-parallel scaling on this machine: MNIST-1D CNN at a fixed global batch, world size 1 vs 2
(gloo, one thread per process), alternating launches; prints samples/s and the scaling factor.

    python benchmarks/ddp.py [--epochs 5] [--global-batch 256] [--reps 3]

Target: at least 1.6x at 2 processes. Each launch is a fresh ``torchrun`` (the timing excludes
start-up: every rank times its own ``fit_one_cycle`` and rank 0 prints the slowest).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def child(epochs: int, global_batch: int) -> None:
    import torch
    import torch.distributed as dist

    import onecycle as oc
    from onecycle.data import load_task
    from onecycle.models import create_model
    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", 1))
    task = load_task("mnist1d", batch_size=global_batch // world, device="cpu")
    torch.manual_seed(0)
    model = create_model(task.default_model, task.in_shape, task.n_out)
    learn = oc.Learner(model, task.train_dl, None, task.loss_fn, quiet=True, device="cpu")
    learn.fit_one_cycle(1, 0.1, on_nan="off")  # warm-up (allocator, DDP buckets)
    start = time.perf_counter()
    learn.fit_one_cycle(epochs, 0.1, on_nan="off")
    seconds = torch.tensor(time.perf_counter() - start)
    if world > 1:
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    if learn.rank == 0:
        print(f"RESULT {epochs * 4000 / seconds.item():.1f}", flush=True)
    if world > 1:
        dist.barrier()  # leave together: a rank exiting early makes gloo abort its peer


def launch(world: int, epochs: int, global_batch: int) -> float:
    script = [os.path.abspath(__file__), "--child", "--epochs", str(epochs), "--global-batch", str(global_batch)]
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}", *script]
           if world > 1 else [sys.executable, *script])
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")]
    if out.returncode != 0 or not line:
        raise RuntimeError(out.stderr[-2000:])
    return float(line[0].split()[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--global-batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    if args.child:
        return child(args.epochs, args.global_batch)
    rates: dict[int, list[float]] = {1: [], 2: []}
    for r in range(args.reps):
        for world in ((1, 2) if r % 2 == 0 else (2, 1)):
            rates[world].append(launch(world, args.epochs, args.global_batch))
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(f"global batch {args.global_batch}, {args.epochs} epochs, median of {args.reps}: "
          f"world 1 {one:.0f} samples/s, world 2 {two:.0f} samples/s, scaling {two / one:.2f}x (target >= 1.6)")


if __name__ == "__main__":
    main()
