"""``Learner(compile=True)`` against eager on the MNIST-1D CNN, on this machine's CPU.

Two learners on the same init and data: the first one-epoch fit of each is timed (for the compiled
one it includes ``torch.compile``'s tracing and code generation; recompiles for the last, shorter
batch included), then one-epoch fits alternate between them and the median is the steady state.
Per-epoch time includes the (eager) validation pass for both. Inductor's on-disk caches are pointed
at a fresh folder so the compile is cold, as a user's first run is (``--warm-cache`` keeps the usual
cache, as a second run of the same model is).

    python benchmarks/compile.py [--reps 7] [--channels 25] [--batch-size 128] [--warm-cache]

Prints compile cost and the steady-state speed-up (> 1: compiled faster). No target: the note is
whether it helps here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import torch

import onecycle as oc
from onecycle.models import create_model
from onecycle.tasks import load_task


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--channels", type=int, default=25)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--warm-cache", action="store_true")
    args = ap.parse_args()
    cache = None if args.warm_cache else tempfile.mkdtemp(prefix="inductor-")
    if cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # read when compiling, not at import
    try:
        run(args)
    finally:
        if cache:
            shutil.rmtree(cache, ignore_errors=True)


def run(args) -> None:
    task = load_task("mnist1d", batch_size=args.batch_size, device="cpu")
    torch.manual_seed(0)
    init = create_model("cnn", task.in_shape, task.n_out, channels=args.channels).state_dict()

    def learner(compile: bool) -> oc.Learner:
        model = create_model("cnn", task.in_shape, task.n_out, channels=args.channels)
        model.load_state_dict(init)
        return oc.Learner(model, task.train_dl, task.valid_dl, metrics=task.metrics, quiet=True, device="cpu",
                          compile=compile)

    def epoch(learn: oc.Learner) -> float:
        start = time.perf_counter()
        learn.fit_one_cycle(1, 0.1)
        return time.perf_counter() - start

    learners = {"eager": learner(False), "compiled": learner(True)}
    first = {k: epoch(learn) for k, learn in learners.items()}
    second = {k: epoch(learn) for k, learn in learners.items()}  # any late recompile shows here
    times = {k: [] for k in learners}
    for r in range(args.reps):
        for k in learners if r % 2 == 0 else reversed(learners):
            times[k].append(epoch(learners[k]))
    med = {k: statistics.median(v) for k, v in times.items()}
    acc = {k: learn.recorder.metrics["accuracy"][-1] for k, learn in learners.items()}
    print(f"MNIST-1D CNN (channels {args.channels}), batch {args.batch_size}, {len(task.train_dl)} steps/epoch, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, {'warm' if args.warm_cache else 'cold'} "
          f"inductor cache; median of {args.reps} interleaved epochs")
    for k in learners:
        print(f"  {k:>8}: first epoch {first[k]:6.2f} s, second {second[k]:6.3f} s, steady {med[k]:.3f} s "
              f"(min {min(times[k]):.3f}), accuracy after {args.reps + 2} one-epoch fits {acc[k]:.3f}")
    cost = first["compiled"] - first["eager"]
    gain = med["eager"] - med["compiled"]
    print(f"compile cost (first epoch, compiled - eager): {cost:.2f} s; steady-state speed-up eager/compiled: "
          f"{med['eager'] / med['compiled']:.3f}x")
    if gain > 0:
        print(f"break-even after {cost / gain:.0f} epochs")
    else:
        print("compiled is not faster in steady state here: compile=True does not pay off on this CPU and model")


if __name__ == "__main__":
    main()
