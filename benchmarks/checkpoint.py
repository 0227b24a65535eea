"""Training-checkpoint cost: write time and size, and the overhead of checkpointing on a real fit.

1. Write time and size of the Learner's training checkpoint (``onecycle.resume.capture`` then the v2
   encoding and atomic write ``fit_*(checkpoint_dir=...)`` uses for ``last.ckpt``) after a fit, for
   the MNIST-1D CNN and a ~25M-parameter MLP on random data, split into its stages: capture, pack
   (the safety walk that also lifts the tensors out), the pickled index (``torch.save``), sha256, and
   the write itself (write, fsync, rename, fsync of the folder).
2. The same stages for the recorder alone as the run grows (synthetic histories of 1k to 100k
   iterations): what every checkpoint of a long run re-serialises.
3. ``fit_one_cycle`` on the MNIST-1D CNN (10 epochs, 32 steps each) without a checkpoint folder and
   with the library's defaults (epoch ends, ``ckpt_budget=0.005``), the CLI's (``every=200``), and
   with ``ckpt_budget=None`` (a write at every epoch end and every N steps; synchronous too, to show
   what the background writer saves), interleaved. Overhead is wall time against the run without
   checkpoints; "in checkpoint" counts the caller's time inside ``capture``/``save`` (the writer
   thread's disk work runs alongside training and shows only in wall time).

    python benchmarks/checkpoint.py [--reps 5] [--every 200 50 10]
    python benchmarks/checkpoint.py --overhead-only --channels 64 --opt adamw --lr 0.01   # the CLI's mnist1d model

Target: at most 2% overhead at the default interval (epoch ends in the library, every=200 in the CLI).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

import onecycle as oc
from onecycle import checkpoint as C
from onecycle import resume as R
from onecycle.atomic import atomic_write
from onecycle.data import TensorLoader
from onecycle.models import create_model
from onecycle.recorder import Recorder
from onecycle.tasks import load_task


def stages(state: dict, folder: str) -> dict[str, float]:
    """Seconds per stage of ``atomic_save(state, folder/last.ckpt)``, done as atomic_save does them."""
    t = [time.perf_counter()]
    tree, table, views = C._pack(state)
    t.append(time.perf_counter())
    buffer = io.BytesIO()
    torch.save({"tree": tree, "tensors": table}, buffer)
    index = buffer.getbuffer()
    chunks = [len(index).to_bytes(8, "little"), index, *(memoryview(v.cpu().numpy()) for v in views)]
    t.append(time.perf_counter())
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    header = C.MAGIC + f" v2 {digest.hexdigest()} {sum(memoryview(c).nbytes for c in chunks)}\n".encode("ascii")
    t.append(time.perf_counter())
    atomic_write(os.path.join(folder, "last.ckpt"), [header, *chunks])
    t.append(time.perf_counter())
    names = ("pack", "index torch.save", "sha256", "write+fsync")
    return {n: b - a for n, a, b in zip(names, t, t[1:])}


def report_write(label: str, learn: oc.Learner, reps: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        rows = []
        for _ in range(reps):
            start = time.perf_counter()
            state = R.capture(learn, learn.n_epochs, 0, None)
            captured = time.perf_counter() - start
            rows.append({"capture": captured, **stages(state, d)})
            start = time.perf_counter()
            C.atomic_save(state, os.path.join(d, "check.ckpt"))  # the library call, end to end
            rows[-1]["atomic_save (library)"] = time.perf_counter() - start
        size = Path(d, "last.ckpt").stat().st_size
    n_params = sum(p.numel() for p in learn.model.parameters())
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    total = sum(v for k, v in med.items() if k != "atomic_save (library)")
    print(f"{label}: {n_params:,} params, checkpoint {size / 2**20:.2f} MiB, capture + write {total * 1e3:.1f} ms "
          f"(median of {reps}; {size / 2**20 / total:.0f} MiB/s)")
    print("    " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in med.items()))


def recorder_growth(folder: str) -> None:
    print("recorder alone, by iterations recorded (1 param group, 1 metric; median of 3):")
    for n in (1_000, 10_000, 100_000):
        rec = Recorder(["accuracy"])
        rec.add_iterations([[0.1]] * n, [0.9] * n, [1.0 + i * 1e-6 for i in range(n)])
        state = {"recorder": rec.state_dict()}
        rows = [stages(state, folder) for _ in range(3)]
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        size = Path(folder, "last.ckpt").stat().st_size
        print(f"  {n:>7} iterations: {size / 2**20:5.2f} MiB, " + ", ".join(f"{k} {v * 1e3:.1f} ms"
                                                                          for k, v in med.items()))
        # what checkpoints store: the per-iteration lists as float64 tensors (exact for Python floats)
        start = time.perf_counter()
        as_tensors = R.pack_floats(state["recorder"])
        convert = time.perf_counter() - start
        rows = [stages({"recorder": as_tensors}, folder) for _ in range(3)]
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"  {'':>7}  packed (pack_floats, as checkpoints store it): {convert * 1e3:.1f} ms, "
              + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in med.items()))


class Counted:
    """Wraps onecycle.resume.capture and the checkpoint writer's save to count writes and the
    caller's seconds inside them. ``sync``: write in the caller's thread (``atomic_save``) instead of
    the background writer."""

    def __init__(self, sync: bool = False) -> None:
        self.calls, self.seconds, self.sync = 0, 0.0, sync
        self.capture, self.save = R.capture, C.CheckpointWriter.save

    def __enter__(self) -> Counted:
        def capture(*a, **k):
            start = time.perf_counter()
            try:
                return self.capture(*a, **k)
            finally:
                self.seconds += time.perf_counter() - start

        def save(writer, state, path):
            start = time.perf_counter()
            try:
                if self.sync:
                    C.atomic_save(state, path)
                else:
                    self.save(writer, state, path)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        R.capture, C.CheckpointWriter.save = capture, save
        return self

    def __exit__(self, *exc) -> None:
        R.capture, C.CheckpointWriter.save = self.capture, self.save


def overhead(args) -> None:
    task = load_task("mnist1d", device="cpu")
    init = create_model("cnn", task.in_shape, task.n_out, channels=args.channels).state_dict()
    # name -> (fit keywords, or None for no checkpoint folder; synchronous writes)
    settings = {"no checkpoint": (None, False),
                "default (epoch ends, 0.5%)": ({}, False),
                **{f"every={n}, 0.5%": ({"every": n}, False) for n in args.every},
                "every epoch end, no budget": ({"ckpt_budget": None}, False),
                "  same, synchronous": ({"ckpt_budget": None}, True),
                **{f"every={n}, no budget": ({"every": n, "ckpt_budget": None}, False) for n in args.every}}

    def run(kw, sync) -> tuple[float, float, Counted]:
        model = create_model("cnn", task.in_shape, task.n_out, channels=args.channels)
        model.load_state_dict(init)
        learn = oc.Learner(model, task.train_dl, task.valid_dl, metrics=task.metrics, quiet=True, device="cpu",
                           opt=args.opt)
        with tempfile.TemporaryDirectory() as d, Counted(sync) as counted:
            fit_kw = {} if kw is None else {"checkpoint_dir": d, **kw}
            start = time.perf_counter()
            learn.fit_one_cycle(args.epochs, args.lr, **fit_kw)
            return time.perf_counter() - start, sum(learn.recorder.times), counted

    run(None, False)  # warm-up
    times, epochs, inside = ({k: [] for k in settings} for _ in range(3))
    calls = {}
    for r in range(args.reps):
        for k in settings if r % 2 == 0 else reversed(settings):
            seconds, in_epochs, counted = run(*settings[k])
            times[k].append(seconds)
            epochs[k].append(in_epochs)
            inside[k].append(counted.seconds)
            calls[k] = counted.calls
    base = statistics.median(times["no checkpoint"])
    steps = args.epochs * len(task.train_dl)
    print(f"MNIST-1D CNN ({args.channels} channels, {args.opt}), fit_one_cycle {args.epochs} epochs x "
          f"{len(task.train_dl)} steps = {steps} steps, median of {args.reps} interleaved. 'epochs s': the "
          "recorder's epoch times (they exclude epoch-end writes, not mid-epoch ones)")
    print(f"  {'setting':>28} {'writes':>6} {'fit s':>6} {'epochs s':>8} {'wall overhead':>13} "
          f"{'in checkpoint ms':>16}")
    for k in settings:
        fit, spent = statistics.median(times[k]), statistics.median(inside[k])
        print(f"  {k:>28} {calls[k]:>6} {fit:6.3f} {statistics.median(epochs[k]):8.3f} "
              f"{100 * (fit / base - 1):12.1f}% {spent * 1e3:16.1f}")


def write_costs(args) -> None:
    torch.manual_seed(0)
    task = load_task("mnist1d", device="cpu")
    learn = oc.Learner(create_model("cnn", task.in_shape, task.n_out), task.train_dl, task.valid_dl,
                       metrics=task.metrics, quiet=True, device="cpu")
    learn.fit_one_cycle(args.epochs, 0.1)
    report_write(f"MNIST-1D CNN after {args.epochs} epochs", learn, reps=10)

    x, y = torch.randn(1024, 40), torch.randint(0, 10, (1024,))
    big = create_model("mlp", (40,), 10, hidden=(4096, 4096, 2048))
    learn = oc.Learner(big, TensorLoader(x, y, batch_size=256, shuffle=True), None, quiet=True, device="cpu")
    learn.fit_one_cycle(1, 0.01)
    report_write("MLP 40-4096-4096-2048-10 after 1 epoch (SGD momentum state included)", learn, reps=5)

    with tempfile.TemporaryDirectory() as d:
        start = time.perf_counter()
        for _ in range(20):
            with open(os.path.join(d, "f"), "wb") as f:
                f.write(b"x" * 4096)
                f.flush()
                os.fsync(f.fileno())
        print(f"fsync of a 4 KiB file on this disk: {(time.perf_counter() - start) / 20 * 1e3:.2f} ms")
        recorder_growth(d)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--every", type=int, nargs="+", default=[200, 50, 10])
    ap.add_argument("--channels", type=int, default=25, help="of the CNN in part 3 (the CLI's mnist1d default: 64)")
    ap.add_argument("--opt", default="sgd", help="optimizer in part 3 (the CLI's mnist1d default: adamw)")
    ap.add_argument("--lr", type=float, default=0.1, help="peak LR in part 3")
    ap.add_argument("--overhead-only", action="store_true", help="skip parts 1 and 2")
    args = ap.parse_args()
    if not args.overhead_only:
        write_costs(args)
    overhead(args)


if __name__ == "__main__":
    main()
