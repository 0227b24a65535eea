"""Scenarios for the data-parallel tests, launched with torchrun (2 processes, gloo on CPU).
Each rank saves what it saw to ``<out>/rank<r>.pt`` for the test to compare."""

import argparse
import copy
import os

import torch
from torch import nn

import onecycle as oc
from onecycle.data import TensorLoader


def data(n=64, n_valid=25):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(n + n_valid, 6, generator=g), torch.randint(0, 3, (n + n_valid,), generator=g)
    return (x[:n], y[:n]), (x[n:], y[n:])


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def learner(batch, opt="sgd", **kw):
    (x, y), (xv, yv) = data()
    return oc.Learner(model(), TensorLoader(x, y, batch_size=batch, shuffle=True, seed=3),
                      TensorLoader(xv, yv, batch_size=4), opt=opt, metrics=[oc.metrics.accuracy],
                      quiet=True, device="cpu", **kw)


def first_difference(a, b, path="") -> str | None:
    """Where ``a`` and ``b`` first differ, or None when they are exactly equal: ``torch.equal`` (and the
    same dtype) on every tensor, ``==`` on everything else, through dicts, lists and tuples."""
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        same = a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        return None if same else f"{path}: tensors differ"
    if isinstance(a, dict):
        if a.keys() != b.keys():
            return f"{path}: keys {sorted(map(str, a))} vs {sorted(map(str, b))}"
        return next((d for k in a if (d := first_difference(a[k], b[k], f"{path}[{k!r}]"))), None)
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{path}: lengths {len(a)} vs {len(b)}"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := first_difference(x, y, f"{path}[{i}]"))),
                    None)
    return None if a == b else f"{path}: {a!r} vs {b!r}"


class RaiseAt(oc.Callback):
    def __init__(self, rank, k):
        self.rank, self.k, self.n = rank, k, 0

    def after_batch(self, learn):
        self.n += 1
        if learn.rank == self.rank and self.n == self.k:
            raise RuntimeError(f"boom on purpose at batch {self.k}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario")
    ap.add_argument("--out", required=True)
    ap.add_argument("--opt", default="sgd")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ckpt", default="")
    ap.add_argument("--kill-at", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = {}
    if args.scenario == "fit":
        learn = learner(args.batch, args.opt, wd=0.01)
        learn.fit_one_cycle(3, 0.1 if args.opt == "sgd" else 2.0)
        out = {"model": learn.model.state_dict(), "val": learn.validate(), "losses": learn.recorder.losses,
               "val_losses": learn.recorder.val_losses}
    elif args.scenario == "lr_find":
        learn = learner(args.batch)
        learn.fit_one_cycle(1, 0.05)
        before = {k: v.clone() for k, v in learn.model.state_dict().items()}
        opt_before = copy.deepcopy(learn.opt.state_dict())  # state_dict() holds live buffers
        res = learn.lr_find(num_it=20)
        out = {"lrs": res.lrs, "losses": res.losses, "val_losses": res.val_losses, "suggestion": res.suggestion,
               "same_model": all(torch.equal(v, before[k]) for k, v in learn.model.state_dict().items()),
               "same_opt": first_difference(learn.opt.state_dict(), opt_before)}
    elif args.scenario == "raise":
        learn = learner(args.batch, callbacks=[RaiseAt(1, 5)])
        learn.fit_one_cycle(3, 0.1)
    elif args.scenario == "resume":
        cbs = [RaiseAt(0, args.kill_at)] if args.kill_at else []
        learn = learner(args.batch, callbacks=cbs)
        torch.manual_seed(5 + learn.rank)
        try:
            learn.fit_one_cycle(3, 0.1, checkpoint_dir=args.ckpt, every=3, ckpt_budget=None,
                                resume="auto" if not cbs else False)
        except RuntimeError:
            return
        rec = learn.recorder.state_dict()
        rec.pop("times")
        out = {"model": learn.model.state_dict(), "opt": learn.opt.state_dict(), "recorder": rec}
    torch.save(out, os.path.join(args.out, f"rank{learn.rank}.pt"))


if __name__ == "__main__":
    main()
