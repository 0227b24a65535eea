"""Training jobs for the resume tests: a small model on a small noisy dataset, served by one of
several loader kinds (``LOADERS``), and a driver that runs a plan of jobs in forked child processes.

The driver is started once per test (one ``import torch``) and forks one child per job, waiting on
each (``waitpid``) before the next: a reference run, runs that SIGKILL themselves at a chosen
moment, and runs that resume from what a killed one left on disk. A killing job first waits until
every checkpoint written so far is on disk (the writer thread's join: an event, not a sleep), so the
checkpoint the next job resumes from is known. The parent runs no torch op before forking. Prints
one JSON line: each job's exit code by name (negative: the signal that ended it).
"""

import argparse
import json
import os
import random
import shutil
import signal
import sys
import traceback

import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

import onecycle as oc
from onecycle import resume as R
from onecycle.rng import get_rng_state

EPOCHS, N_TRAIN, BATCH, EVERY = 3, 96, 8, 5  # 12 steps an epoch: checkpoints at steps 5, 10, 12, 15, 20, 24, ...
LOADERS = ("shuffle", "generator", "sampler", "batch_sampler", "workers", "stateful", "stateful_workers")


class NoisyData(Dataset):
    """Samples with fresh noise drawn at every fetch from the fetching process's torch, ``random``
    and numpy RNGs: the main process's global ones (no workers), or each worker's, seeded from the
    base seed the loader draws when its iterator is made. So the data, not only its order, depends
    on every RNG involved."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        shift = 0.01 * random.random() + 0.01 * float(np.random.rand())  # the other global RNGs too
        return self.x[i] + 0.05 * torch.randn(self.x.shape[1]) + shift, self.y[i]


def make_loader(kind: str, ds: Dataset, num_workers: int = 0):
    """A shuffling training loader of ``kind``; every generator it owns is seeded here."""
    g = torch.Generator().manual_seed(7)
    if kind == "shuffle":  # draws its shuffle from the global RNG
        return DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=num_workers)
    if kind == "generator":
        return DataLoader(ds, batch_size=BATCH, shuffle=True, generator=g, num_workers=num_workers)
    if kind == "sampler":
        return DataLoader(ds, batch_size=BATCH, sampler=RandomSampler(ds, generator=g), num_workers=num_workers)
    if kind == "batch_sampler":
        return DataLoader(ds, batch_sampler=BatchSampler(RandomSampler(ds, generator=g), BATCH, False),
                          num_workers=num_workers)
    if kind == "workers":  # the workers' seeds come from the loader's generator
        return DataLoader(ds, batch_size=BATCH, shuffle=True, generator=g, num_workers=2)
    if kind == "stateful":  # keeps its own position; its sampler seeds its own generator from the global RNG
        from torchdata.stateful_dataloader import StatefulDataLoader
        return StatefulDataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=num_workers)
    if kind == "stateful_workers":  # replayed: its snapshot does not hold the workers' RNGs
        from torchdata.stateful_dataloader import StatefulDataLoader
        return StatefulDataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=2)
    raise ValueError(f"unknown loader kind {kind!r}")


def make_learner(num_workers: int = 0, callbacks=(), loader: str = "shuffle") -> oc.Learner:
    torch.manual_seed(0)
    random.seed(0)  # a forked child's ``random`` is reseeded from the OS: seed what the run may draw from
    np.random.seed(0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(N_TRAIN + 24, 6, generator=g), torch.randint(0, 3, (N_TRAIN + 24,), generator=g)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    train = make_loader(loader, NoisyData(x[:N_TRAIN], y[:N_TRAIN]), num_workers)
    valid = DataLoader(torch.utils.data.TensorDataset(x[N_TRAIN:], y[N_TRAIN:]), batch_size=10)
    return oc.Learner(model, train, valid, metrics=[oc.metrics.accuracy], quiet=True, device="cpu",
                      callbacks=list(callbacks))


def final_state(learn: oc.Learner) -> dict:
    """What a resumed run must end with, bit for bit: weights, optimizer, history (less wall
    times, the one thing a resumed run cannot repeat), and every RNG including the loader's."""
    rec = learn.recorder.state_dict()
    rec.pop("times")
    return {"model": learn.model.state_dict(), "opt": learn.opt.state_dict(), "recorder": rec,
            "rng": get_rng_state([learn.train_dl])}


class KillAt(oc.Callback):
    """SIGKILL this process after its ``batch``-th batch (1-based, counted in this process) or as
    epoch ``epoch`` begins, once every checkpoint written so far is on disk."""

    def __init__(self, batch: int | None = None, epoch: int | None = None) -> None:
        self.batch, self.epoch, self.seen = batch, epoch, 0

    def before_epoch(self, learn) -> None:
        if learn.epoch == self.epoch:
            self._kill(learn)

    def after_batch(self, learn) -> None:
        self.seen += 1
        if self.seen == self.batch:
            self._kill(learn)

    @staticmethod
    def _kill(learn) -> None:
        learn.checkpointer.wait(learn)  # joins the checkpoint writer: the last scheduled write is durable
        os.kill(os.getpid(), signal.SIGKILL)


class FirstStep(oc.Callback):
    """The optimizer step count a run's first batch starts from (> 0: it resumed)."""

    def __init__(self) -> None:
        self.step = None

    def before_batch(self, learn) -> None:
        if self.step is None:
            self.step = learn.scheduler.step_count


def fit(learn: oc.Learner, ckpt: str, resume: bool | str = False) -> None:
    torch.manual_seed(42)
    learn.fit_one_cycle(EPOCHS, 0.1, checkpoint_dir=ckpt, every=EVERY, ckpt_budget=None, resume=resume)


def run_job(job: dict) -> None:
    """One job: ``name``, ``loader`` (a kind in ``LOADERS``), ``ckpt`` (folder), ``out`` (where to
    save the final state and first step; none for killed jobs), ``kill`` ("b<k>": after batch k,
    "e<E>": as epoch E begins), ``resume`` (False/True/"auto"), ``keep`` (where the driver copies
    the checkpoint the job left)."""
    torch.set_num_threads(1)
    kill = job.get("kill")
    first = FirstStep()
    callbacks = [first]
    if kill:
        callbacks.append(KillAt(batch=int(kill[1:])) if kill[0] == "b" else KillAt(epoch=int(kill[1:])))
    learn = make_learner(callbacks=callbacks, loader=job["loader"])
    fit(learn, job["ckpt"], job.get("resume", False))
    if job.get("out"):
        torch.save({"final": final_state(learn), "first_step": first.step}, job["out"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", required=True, help="a JSON file holding a list of jobs (see run_job)")
    args = ap.parse_args()
    with open(args.jobs) as f:
        jobs = json.load(f)
    # Pay once, here, for what torch imports lazily on its first optimizer (torch's compiler stack,
    # seconds), instead of in every forked job. No parallel op runs before the forks.
    torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    codes = {}
    for job in jobs:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                run_job(job)
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        codes[job["name"]] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        kept = os.path.join(job["ckpt"], R.CKPT_NAME)
        if job.get("keep") and os.path.exists(kept):  # what a killed job left, before a resume replaces it
            shutil.copyfile(kept, job["keep"])
    print(json.dumps(codes))


if __name__ == "__main__":
    main()
