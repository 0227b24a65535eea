"""Peak resident memory of ``fit_one_cycle`` against a hand-written loop doing the same work.

Each contender runs in its own fresh interpreter (``--child NAME``) and reports
``getrusage(RUSAGE_SELF).ru_maxrss`` (and ``VmHWM`` from ``/proc/self/status`` as a cross-check).
ru_maxrss survives fork and exec, so the parent stays lean (no torch, no numpy: a child writes the
data to an ``.npz``) or every child would report at least the parent's size. Every child loads that
``.npz``, so the hand-written child imports only torch and numpy. Contenders: ``base`` (imports torch, loads
the data, no training), ``hand`` (a plain loop, ``OneCycleLR``, ``DataLoader``, per-epoch validation),
``ours`` (``Learner.fit_one_cycle`` on the same ``DataLoader``) and ``ours-tl`` (the same on
onecycle's ``TensorLoader``, the path ``load_task`` gives). The ``ours`` children also check that the
recorder holds only plain Python numbers (no tensors) after the fit.

    python benchmarks/memory.py [--task mnist1d mnist1d_large] [--epochs 10] [--reps 3]

Target: ours within 50 MB of the hand-written loop.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CONTENDERS = ("base", "hand", "ours", "ours-tl")


def loaders(data, bs, tensor_loader):
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    x, y, xv, yv = (torch.from_numpy(data[k]) for k in ("x", "y", "xv", "yv"))
    if tensor_loader:
        from onecycle.data import TensorLoader
        return TensorLoader(x, y, batch_size=bs, shuffle=True), TensorLoader(xv, yv, batch_size=bs)
    train = DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=True)
    return train, DataLoader(TensorDataset(xv, yv), batch_size=bs)


def cnn():
    from torch import nn
    # the MNIST-1D CNN (onecycle.models.MNIST1DConv), spelled out so the hand-written child imports no onecycle
    return nn.Sequential(nn.Conv1d(1, 25, 5, 2, 1), nn.ReLU(), nn.Conv1d(25, 25, 3, 2, 1), nn.ReLU(),
                         nn.Conv1d(25, 25, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(125, 10))


def hand(dl, vdl, epochs, lr):
    from _hand import hand_written  # torch only
    return {"accuracy": hand_written(cnn(), dl, vdl, epochs, lr)}


def leaves(obj, where="recorder"):
    """(path, value) of every leaf under nested dicts, lists, tuples and onecycle objects' attributes."""
    if type(obj).__module__.startswith("onecycle."):  # the Recorder and its SmoothLoss
        obj = vars(obj)
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from leaves(v, f"{where}[{i}]")
    else:
        yield where, obj


def ours(dl, vdl, epochs, lr):
    import onecycle as oc
    learn = oc.Learner(cnn(), dl, vdl, metrics=[oc.metrics.accuracy], quiet=True, device="cpu")
    rec = learn.fit_one_cycle(epochs, lr)
    found = list(leaves(rec))  # every attribute, the smoother's too
    bad = [f"{w}: {type(v).__name__}" for w, v in found if type(v) not in (float, int, str)]
    n_floats = sum(type(v) is float for _, v in found)
    return {"accuracy": rec.metrics["accuracy"][-1], "recorder_non_plain": bad[:5], "recorder_floats": n_floats}


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def prepare(task, path) -> None:
    import numpy as np

    from onecycle.tasks import load_task
    t = load_task(task, device="cpu")
    (x, y), (xv, yv) = t.train_dl.tensors, t.valid_dl.tensors
    np.savez(path, x=x.numpy(), y=y.numpy(), xv=xv.numpy(), yv=yv.numpy())
    print(json.dumps({"n": len(x), "n_valid": len(xv), "bs": t.train_dl.batch_size}))


def child(name, data_path, epochs, lr, bs) -> None:
    import numpy as np
    import torch
    torch.manual_seed(0)
    data = dict(np.load(data_path))
    out = {}
    if name != "base":
        dl, vdl = loaders(data, bs, tensor_loader=name == "ours-tl")
        out = (hand if name == "hand" else ours)(dl, vdl, epochs, lr)
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    out["hwm_mb"] = vm_hwm_mb()
    print(json.dumps(out))


def python(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def measure(task, args) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "data.npz"
        info = python("--prepare", task, "--data", str(path))
        bs = info["bs"]
        runs = {k: [] for k in CONTENDERS}
        for r in range(args.reps):
            for k in CONTENDERS if r % 2 == 0 else reversed(CONTENDERS):
                runs[k].append(python("--child", k, "--data", str(path), "--epochs", str(args.epochs),
                                      "--lr", str(args.lr), "--bs", str(bs)))
    print(f"{task}: {info['n']} train / {info['n_valid']} valid, batch {bs}, {args.epochs} epochs, "
          f"peak RSS (ru_maxrss) median of {args.reps} fresh processes; parent {parent_mb():.0f} MB")
    med = {k: statistics.median(r["maxrss_mb"] for r in v) for k, v in runs.items()}
    for k, v in runs.items():
        acc = f"  final accuracy {v[0]['accuracy']:.3f}" if "accuracy" in v[0] else ""
        hwm = statistics.median(r["hwm_mb"] for r in v)
        print(f"  {k:>8}: {med[k]:7.1f} MB  (+{med[k] - med['base']:5.1f} over base; VmHWM {hwm:.1f} MB){acc}")
    for k in ("ours", "ours-tl"):
        diff = med[k] - med["hand"]
        print(f"  {k} - hand = {diff:+.1f} MB (target <= 50 MB: {'met' if diff <= 50 else 'MISSED'})")
        info = runs[k][0]
        print(f"  {k} recorder: {info['recorder_floats']} Python floats; anything else but int/str: "
              f"{info['recorder_non_plain'] or 'none'}")


def parent_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", nargs="+", default=["mnist1d"])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--child", choices=CONTENDERS)
    ap.add_argument("--prepare")
    ap.add_argument("--data")
    ap.add_argument("--bs", type=int, default=128)
    args = ap.parse_args()
    if args.prepare:
        prepare(args.prepare, args.data)
        return
    if args.child:
        child(args.child, args.data, args.epochs, args.lr, args.bs)
        return
    for task in args.task:
        measure(task, args)


if __name__ == "__main__":
    main()
