"""onecycle against its peers on the same model, data, optimizer and schedule.

MNIST-1D CNN, batch 128, SGD (momentum 0.9, cycled 0.95-0.85 by the schedule), per-epoch validation
with accuracy. Contenders, each where installed (a missing one is skipped with a note):

- onecycle ``fit_sched`` with ``torch_one_cycle`` (= ``OneCycleLR``), on its ``TensorLoader`` and on
  the DataLoader the peers get;
- Lightning's ``Trainer`` with ``OneCycleLR`` stepped per batch (``interval="step"`` in
  ``configure_optimizers``), progress bar, logger, checkpointing and model summary off, and the
  same with ``barebones=True``;
- fastai's ``fit_one_cycle`` (its cosine 1cycle, so onecycle's ``fit_one_cycle`` is timed next to it).
  fastai needs torchvision; where it is missing the fastai rows are skipped.

Every seed runs every contender (alternating order), same init and same batch order; the time
includes building the Learner/Trainer. Also: import time added over ``import torch``, in fresh
interpreters. Lightning is not a onecycle dependency: install it in a throwaway environment, e.g.

    .venv/bin/python -m venv /tmp/lvenv && SP=/tmp/lvenv/lib/python3.11/site-packages
    printf '%s\\n' "$PWD/.venv/lib/python3.11/site-packages" "$PWD/src" > $SP/main.pth  # sees torch, onecycle
    /tmp/lvenv/bin/pip install lightning -c constraints.txt
    /tmp/lvenv/bin/python benchmarks/peers.py [--epochs 10] [--seeds 0 1 2]

Targets: onecycle (TensorLoader) at least 1.4x the throughput of the faster peer; final accuracies
equal within one standard deviation across seeds.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import statistics
import subprocess
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import onecycle as oc
from onecycle.data import TensorLoader
from onecycle.models import create_model
from onecycle.tasks import load_task

LR = 0.1


def have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def ours(model, dl, vdl, epochs) -> float:
    learn = oc.Learner(model, dl, vdl, metrics=[oc.metrics.accuracy], quiet=True, device="cpu")
    policy = oc.schedules.torch_one_cycle(epochs * len(dl))
    return learn.fit_sched(epochs, LR, policy.lr, policy.mom).metrics["accuracy"][-1]


def ours_fastai_schedule(model, dl, vdl, epochs) -> float:
    learn = oc.Learner(model, dl, vdl, metrics=[oc.metrics.accuracy], quiet=True, device="cpu")
    return learn.fit_one_cycle(epochs, LR).metrics["accuracy"][-1]


def lightning_fit(model, dl, vdl, epochs, barebones=False) -> float:
    import lightning.pytorch as pl

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.model, self.correct, self.seen = model, 0, 0

        def training_step(self, batch, _):
            x, y = batch
            return F.cross_entropy(self.model(x), y)

        def on_validation_epoch_start(self):
            self.correct, self.seen = 0, 0

        def validation_step(self, batch, _):
            x, y = batch
            self.correct += int((self.model(x).argmax(1) == y).sum())
            self.seen += len(y)

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=LR, momentum=0.9)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=epochs * len(dl))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    module = Module()
    flags = dict(barebones=True) if barebones else dict(logger=False, enable_checkpointing=False,
                                                        enable_progress_bar=False, enable_model_summary=False)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, num_sanity_val_steps=0, **flags)
    trainer.fit(module, dl, vdl)
    return module.correct / module.seen


def fastai(model, dl, vdl, epochs) -> float:
    # Not exercised on the project's machine (no torchvision CPU build, so no fastai).
    from functools import partial

    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.metrics import accuracy
    from fastai.optimizer import SGD
    learn = Learner(DataLoaders(dl, vdl, device="cpu"), model, loss_func=F.cross_entropy,
                    opt_func=partial(SGD, mom=0.9), metrics=accuracy)
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(epochs, LR)
    return float(learn.recorder.values[-1][-1])


def import_times(modules: list[str], reps: int) -> dict[str, float]:
    code = ("import time; t0 = time.perf_counter(); import torch; t1 = time.perf_counter(); import {m}; "
            "print(time.perf_counter() - t1)")
    times = {m: [] for m in modules}
    for r in range(reps):
        for m in modules if r % 2 == 0 else reversed(modules):
            out = subprocess.run([sys.executable, "-c", code.format(m=m)], check=True, capture_output=True, text=True)
            times[m].append(float(out.stdout.split()[-1]))
    return {m: statistics.median(v) for m, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--import-reps", type=int, default=5)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    task = load_task("mnist1d", device="cpu")
    (x, y), (xv, yv), bs = task.train_dl.tensors, task.valid_dl.tensors, 128

    def dataloaders(seed):
        gen = torch.Generator().manual_seed(seed)  # the same batch order as TensorLoader(seed=seed)
        return (DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=True, generator=gen),
                DataLoader(TensorDataset(xv, yv), batch_size=bs))

    def tensorloaders(seed):
        return TensorLoader(x, y, batch_size=bs, shuffle=True, seed=seed), TensorLoader(xv, yv, batch_size=bs)

    contenders = {"onecycle + TensorLoader": (ours, tensorloaders), "onecycle + DataLoader": (ours, dataloaders)}
    peers = []
    if have("lightning.pytorch"):
        import lightning.pytorch  # noqa: F401  (it sets its logger's level on import: quiet it after)
        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
        contenders["Lightning + DataLoader"] = (lightning_fit, dataloaders)
        contenders["Lightning barebones + DataLoader"] = (lambda *a: lightning_fit(*a, barebones=True), dataloaders)
        peers += ["Lightning + DataLoader", "Lightning barebones + DataLoader"]
    else:
        print("Lightning is not installed: skipped (pip install lightning to include it)")
    if have("fastai") and have("torchvision"):
        contenders["onecycle fit_one_cycle + TensorLoader"] = (ours_fastai_schedule, tensorloaders)
        contenders["fastai fit_one_cycle + DataLoader"] = (fastai, dataloaders)
        peers.append("fastai fit_one_cycle + DataLoader")
    else:
        print("fastai (or the torchvision it needs) is not installed: skipped")

    def run(name, seed) -> tuple[float, float]:
        fn, make = contenders[name]
        torch.manual_seed(seed)
        model = create_model("cnn", task.in_shape, task.n_out)
        dl, vdl = make(seed)
        start = time.perf_counter()
        acc = fn(model, dl, vdl, args.epochs)
        return time.perf_counter() - start, acc

    for name in contenders:  # warm-up: first-call costs (imports, allocator) out of the timings
        run(name, 0)
    times = {k: [] for k in contenders}
    accs = {k: [] for k in contenders}
    for i, seed in enumerate(args.seeds):
        for k in contenders if i % 2 == 0 else reversed(contenders):
            t, acc = run(k, seed)
            times[k].append(t)
            accs[k].append(acc)

    n = len(x) * args.epochs
    print(f"MNIST-1D CNN, {args.epochs} epochs, batch {bs}, SGD lr {LR}, seeds {args.seeds} (interleaved); "
          f"torch threads {torch.get_num_threads()}")
    print(f"  {'contender':>38} {'median s':>8} {'samples/s':>9} {'final accuracy (mean +- std)':>30}  per seed")
    for k in contenders:
        t, a = statistics.median(times[k]), accs[k]
        std = statistics.stdev(a) if len(a) > 1 else 0.0
        print(f"  {k:>38} {t:8.3f} {n / t:9.0f} {statistics.mean(a):21.4f} +- {std:.4f}  "
              + " ".join(f"{v:.3f}" for v in a))
    if peers:
        fastest = min(peers, key=lambda k: statistics.median(times[k]))
        ratio = statistics.median(times[fastest]) / statistics.median(times["onecycle + TensorLoader"])
        same = statistics.median(times[fastest]) / statistics.median(times["onecycle + DataLoader"])
        print(f"throughput, onecycle + TensorLoader vs the faster peer ({fastest}): {ratio:.2f}x "
              f"(target >= 1.4: {'met' if ratio >= 1.4 else 'MISSED'}); with the same DataLoader: {same:.2f}x")
        ours_acc = accs["onecycle + TensorLoader"]
        for k in peers:
            gap = abs(statistics.mean(accs[k]) - statistics.mean(ours_acc))
            spread = max(statistics.stdev(accs[k]), statistics.stdev(ours_acc)) if len(ours_acc) > 1 else 0.0
            print(f"accuracy gap to {k}: {gap:.4f} vs one std {spread:.4f} "
                  f"({'equal within one std' if gap <= spread + 1e-6 else 'DIFFERENT'})")

    modules = ["onecycle"] + (["lightning.pytorch"] if have("lightning.pytorch") else [])
    imp = import_times(modules, args.import_reps)
    print(f"import time added over `import torch` (fresh interpreter, median of {args.import_reps}): "
          + ", ".join(f"{m} {v * 1e3:.0f} ms" for m, v in imp.items()))


if __name__ == "__main__":
    main()
