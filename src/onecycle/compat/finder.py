"""The LR range test on a model and optimizer you already have, built on the Learner.

``lr_find(model, optimizer, loss_fn, train_dl, ...)``: the LR range test on a model and optimizer
you already have, without a Learner (torch-lr-finder's way of working): the optimizer is used as it
is and both are restored afterwards.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from .. import checks as C
from ..callbacks import Callback
from ..learner import Learner
from ..lr_find_result import LRFindResult
from ..lr_finder import find

__all__ = ["lr_find"]


def lr_find(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable | None, train_dl: Iterable,
            valid_dl: Iterable | None = None, metrics: Sequence[Callable] = (), *, start_lr: Any = 1e-7,
            end_lr: Any = 10.0, num_it: int = 100, step_mode: str = "exp", stop_div: bool = True,
            div_th: float = 4.0, with_valid: bool | None = None, val_batches: int = 1,
            amp: bool | str = False, accum: int = 1, clip: float | None = None, batch_fn: Callable | None = None,
            callbacks: Sequence[Callback] = (), rule: str | None = None, runs: int = 1) -> LRFindResult:
    """The LR range test without a Learner: ``optimizer`` (its groups, state and weight decay) is
    used as it is and restored afterwards, like the model. Runs on the model's device."""
    C.check_type("optimizer", optimizer, torch.optim.Optimizer)
    C.check_type("model", model, nn.Module)
    device = next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device
    learn = Learner(model, train_dl, valid_dl, loss_fn, metrics=metrics, clip=clip, device=device,
                    amp=amp, accum=accum, batch_fn=batch_fn, quiet=True)
    learn.use_opt(optimizer)
    return find(learn, start_lr, end_lr, num_it, step_mode=step_mode, stop_div=stop_div, div_th=div_th,
                with_valid=with_valid, val_batches=val_batches, callbacks=callbacks, rule=rule, runs=runs,
                use_wd=False)
