"""Data-parallel scaling on this machine: MNIST-1D CNN at a fixed global batch, world size 1 vs 2
(gloo, one thread per process), alternating launches; prints samples/s and the scaling factor.

    python benchmarks/ddp.py [--task mnist1d_large] [--epochs 2] [--global-batch 2048] [--reps 3]

Target: at least 1.6x at 2 processes. The default global batch (2048, on the 40000-sample MNIST-1D)
is where data parallelism pays on two CPU cores: below about 1024 the per-step gloo all-reduce
(~0.3 ms, and ms-long waits when the two ranks drift apart) costs more than the halved compute
(see README). One process is also slower per sample at batch 2048 than at 1024 (cache), so the
script also prints world 2 against world 1 at half the global batch. Each launch is a fresh
``torchrun`` (the timing excludes start-up: every rank times its own ``fit_one_cycle`` and rank 0 prints the slowest).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def child(epochs: int, global_batch: int, task_name: str) -> None:
    import torch
    import torch.distributed as dist

    import onecycle as oc
    from onecycle.models import create_model
    from onecycle.tasks import load_task
    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", 1))
    task = load_task(task_name, batch_size=global_batch // world, device="cpu")
    n_train = len(task.train_dl.tensors[0])
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
        print(f"RESULT {epochs * n_train / seconds.item():.1f}", flush=True)
    if world > 1:
        dist.barrier()  # leave together: a rank exiting early makes gloo abort its peer


def launch(world: int, epochs: int, global_batch: int, task: str) -> float:
    script = [os.path.abspath(__file__), "--child", "--epochs", str(epochs), "--global-batch", str(global_batch),
              "--task", task]
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
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--global-batch", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--task", default="mnist1d_large", help="mnist1d (4000 samples) or mnist1d_large (40000)")
    args = ap.parse_args()
    if args.child:
        return child(args.epochs, args.global_batch, args.task)
    # (world, global batch): the comparison at a fixed global batch, and one process at half of it
    runs = [(1, args.global_batch), (2, args.global_batch), (1, args.global_batch // 2)]
    rates: dict[tuple[int, int], list[float]] = {k: [] for k in runs}
    for r in range(args.reps):
        for world, batch in (runs if r % 2 == 0 else runs[::-1]):
            rates[world, batch].append(launch(world, args.epochs, batch, args.task))
    one, two, half = (statistics.median(rates[k]) for k in runs)
    print(f"{args.task}, global batch {args.global_batch}, {args.epochs} epochs, median of {args.reps}: "
          f"world 1 {one:.0f} samples/s, world 2 {two:.0f} samples/s, scaling {two / one:.2f}x (target >= 1.6)")
    print(f"world 2 at global batch {args.global_batch} against world 1 at batch {args.global_batch // 2} "
          f"({half:.0f} samples/s): {two / half:.2f}x")


if __name__ == "__main__":
    main()
