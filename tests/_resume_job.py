"""A training job for the resume tests, run in a subprocess: optionally SIGKILLs itself after
global iteration ``--kill-at`` (1-based), optionally resumes, and saves its final state."""

import argparse
import os
import signal

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import onecycle as oc


def make_learner(num_workers: int, callbacks=()) -> oc.Learner:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(120, 6, generator=g), torch.randint(0, 3, (120,), generator=g)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    train = DataLoader(TensorDataset(x[:96], y[:96]), batch_size=8, shuffle=True, num_workers=num_workers,
                       persistent_workers=False)
    valid = DataLoader(TensorDataset(x[96:], y[96:]), batch_size=10)
    return oc.Learner(model, train, valid, metrics=[oc.metrics.accuracy], quiet=True, device="cpu",
                      callbacks=list(callbacks))


class KillAt(oc.Callback):
    def __init__(self, k: int) -> None:
        self.k, self.seen = k, 0

    def after_batch(self, learn) -> None:
        self.seen += 1
        if self.seen == self.k:
            os.kill(os.getpid(), signal.SIGKILL)


def final_state(learn: oc.Learner) -> dict:
    rec = learn.recorder.state_dict()
    rec.pop("times")  # wall time is the one thing a resumed run cannot repeat
    return {"model": learn.model.state_dict(), "opt": learn.opt.state_dict(), "recorder": rec}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--kill-at", type=int, default=0)
    ap.add_argument("--resume", default="")
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    learn = make_learner(args.workers, [KillAt(args.kill_at)] if args.kill_at else [])
    torch.manual_seed(42)
    resume = {"": False, "true": True, "auto": "auto"}[args.resume]
    learn.fit_one_cycle(3, 0.1, checkpoint_dir=args.ckpt, every=5, ckpt_budget=None, resume=resume)
    torch.save(final_state(learn), args.out)


if __name__ == "__main__":
    main()
