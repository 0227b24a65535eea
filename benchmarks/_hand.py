"""The hand-written PyTorch reference loop the benchmarks compare against: SGD (momentum 0.9),
``OneCycleLR`` stepped per batch, ``zero_grad(set_to_none=True)``, and, when a validation loader is
given, loss and accuracy over it after every epoch. Imports torch only (``memory.py``'s child must
not import onecycle)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hand_written(model, train_dl, valid_dl, epochs: int, lr: float, foreach: bool | None = None) -> float | None:
    """Train ``model``; returns the last epoch's validation accuracy (None without ``valid_dl``).
    ``foreach``: SGD's (None: torch's default, the per-tensor loop on the CPU)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, foreach=foreach)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * len(train_dl))
    accuracy = None
    for _ in range(epochs):
        model.train()
        for xb, yb in train_dl:
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
        if valid_dl is None:
            continue
        model.eval()
        total, correct, n = 0.0, 0, 0
        with torch.no_grad():
            for xb, yb in valid_dl:
                out = model(xb)
                total += F.cross_entropy(out, yb, reduction="sum").item()
                correct += (out.argmax(1) == yb).sum().item()
                n += len(yb)
        accuracy = correct / n
    return accuracy
