"""User tasks for the command-line tests (``--task _cli_task:tiny``): a small synthetic classification
problem, a gated variant for the Ctrl-C test, one that kills its own process mid-training (a grid's
worker dying), and broken ones for the error messages."""

import os
import signal
import time
from pathlib import Path

import torch

from onecycle.data import TensorLoader
from onecycle.metrics import accuracy
from onecycle.tasks import Task, cross_entropy

NOT_CALLABLE = 3


class SlowLoader:
    """A TensorLoader that sleeps ``delay`` seconds per batch and, with ``gate`` (a folder), stops
    before its ``gate_at``-th batch (counted from 1 over the process's life): it creates
    ``gate/waiting`` and waits there until ``gate/go`` exists, so a test can signal a run that is
    certainly mid-training, then let it go on. A run resumed after ``go`` exists does not wait.
    The loader protocol (len, set_epoch, batch_size) the exact resume relies on is the inner one's."""

    def __init__(self, inner: TensorLoader, delay: float, gate: str = "", gate_at: int = 0) -> None:
        self.inner, self.delay, self.gate, self.gate_at, self.served = inner, delay, gate, gate_at, 0

    def __len__(self) -> int:
        return len(self.inner)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def _wait_at_gate(self) -> None:
        folder = Path(self.gate)
        if (folder / "go").exists():
            return
        (folder / "waiting").touch()
        while not (folder / "go").exists():  # the test signals this process, then creates go
            time.sleep(0.005)

    def __iter__(self):
        for batch in self.inner:
            self.served += 1
            if self.gate and self.served == self.gate_at:
                self._wait_at_gate()
            if self.delay:
                time.sleep(self.delay)
            yield batch


def tiny(batch_size: int = 16, seed: int = 0, n: int = 256, slow: float = 0.0, gate: str = "",
         gate_at: int = 20) -> Task:
    """Four Gaussian blobs in 8 dimensions (the data is fixed; ``seed`` only shuffles)."""
    g = torch.Generator().manual_seed(1234)
    centers = torch.randn(4, 8, generator=g) * 2
    y = torch.randint(0, 4, (n + 64,), generator=g)
    x = centers[y] + torch.randn(n + 64, 8, generator=g)
    train = TensorLoader(x[:n], y[:n], batch_size=batch_size, shuffle=True, seed=seed)
    valid = TensorLoader(x[n:], y[n:], batch_size=64)
    if slow or gate:
        train = SlowLoader(train, slow, gate, gate_at)
    return Task("tiny", train, valid, cross_entropy, [accuracy], (8,), 4, "mlp")


class KillingLoader(SlowLoader):
    """A loader that SIGKILLs its process before its ``at``-th batch (counted in this process) as long
    as ``marks`` holds fewer than ``times`` files, adding one first: the first ``times`` attempts die."""

    def __init__(self, inner: TensorLoader, marks: str, times: int, at: int) -> None:
        super().__init__(inner, 0.0)
        self.marks, self.times, self.at = Path(marks), times, at

    def __iter__(self):
        for batch in self.inner:
            self.served += 1
            if self.served == self.at and len(list(self.marks.glob("kill-*"))) < self.times:
                (self.marks / f"kill-{len(list(self.marks.glob('kill-*')))}").touch()
                os.kill(os.getpid(), signal.SIGKILL)
            yield batch


def killed(batch_size: int = 16, seed: int = 0, marks: str = "", times: int = 1, at: int = 20,
           kill_seed: int = 1) -> Task:
    """``tiny``; with seed ``kill_seed`` its process dies at its ``at``-th batch, the first ``times``
    times (``KillingLoader``)."""
    task = tiny(batch_size, seed)
    if seed == kill_seed:
        task.train_dl = KillingLoader(task.train_dl, marks, times, at)
    return task


def meddling(batch_size: int = 16, seed: int = 0, where: str = "") -> Task:
    """``tiny``, built by a builder that changes the process: the working folder, torch's
    deterministic flag and threads, a signal handler; and prints to both output streams."""
    import sys
    os.chdir(where)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print("meddling on stdout")
    print("meddling on stderr", file=sys.stderr)
    return tiny(batch_size, seed)


def with_loader_workers(batch_size: int = 16, seed: int = 0) -> Task:
    """``tiny`` served by a torch DataLoader with a worker process of its own (a process's child)."""
    from torch.utils.data import DataLoader, TensorDataset
    task = tiny(batch_size, seed)
    ds = TensorDataset(*task.train_dl.tensors)
    task.train_dl = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=1,
                               generator=torch.Generator().manual_seed(seed))
    return task


def oddly_named(batch_size: int = 16, seed: int = 0) -> Task:
    """``tiny`` under a name with path separators in it (the run folder's default name holds it)."""
    task = tiny(batch_size, seed)
    task.name = "../up/and\\back"
    return task


def broken(batch_size: int = 16, seed: int = 0) -> Task:
    raise RuntimeError("broken task: the data is gone")


def needs_a_path(path):
    """A task builder whose signature the command line cannot satisfy."""
    return path


def model_without_shapes():
    return torch.nn.Linear(2, 2)


def not_a_task(seed: int = 0) -> int:
    return 42
