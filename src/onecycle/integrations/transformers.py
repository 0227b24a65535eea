"""Hugging Face ``transformers``: onecycle's LR range test on a ``Trainer`` (the optional
``transformers`` extra: ``pip install 'onecycle[transformers]'``, which brings accelerate, the
Trainer's own requirement).

``lr_find(trainer, **finder_options) -> LRFindResult`` runs the test on what the Trainer would train
with: its model, its training and evaluation loaders (``trainer.get_train_dataloader()`` and
``get_eval_dataloader()``: its datasets, collator, batch sizes, sampler), its optimizer (the one given
as ``optimizers=``, else the one ``trainer.create_optimizer()`` makes from its arguments: AdamW, the
LR, the weight decay and the groups it is kept from), its loss (``trainer.compute_loss``: a subclass's
own, label smoothing, ``compute_loss_func``), and its arguments' gradient accumulation, clipping
(``max_grad_norm``) and bf16/fp16. The evaluation loss is read at every step (the next batch of a
rotating evaluation iterator; ``val_batches=None`` for the whole set). Afterwards the model (weights
bit for bit, buffers, gradients, train/eval modes), the optimizer, ``trainer.optimizer`` and every RNG
are as before; the Trainer has made two loaders more. ``finder_options`` are ``Learner.lr_find``'s
(``start_lr``, ``end_lr``, ``num_it``, ``val_batches``, ``rule``, ``runs``, ...) and ``metrics``
(onecycle metrics of the logits and the labels).

Then train at the suggestion with the Trainer's own schedule (``TrainingArguments(learning_rate=
res.suggestion)``), or with 1cycle: ``Trainer(optimizers=(opt, onecycle.compat.OneCycleLR(opt,
max_lr=res.suggestion, total_steps=total_steps(trainer))))`` (torch's signature; the momentum it
cycles is AdamW's beta1; ``total_steps(trainer)`` is the Trainer's own count of its optimizer steps).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from .. import checks as C
from ..learner import Learner
from ..lr_find_result import LRFindResult
from ..lr_finder import find

__all__ = ["lr_find", "total_steps", "INSTALL"]

INSTALL = C.install_hint("transformers")


def _check_installed() -> Any:
    """The ``transformers.Trainer`` class; ``ImportError`` naming the extra when it is not installed."""
    needs = "onecycle.integrations.transformers needs transformers and accelerate"
    C.import_extra("accelerate", "transformers", needs)  # the Trainer's own dependency
    return C.import_extra("transformers", "transformers", needs).Trainer


class _ComputeLoss(nn.Module):
    """The Trainer's model, called the way the Trainer calls it: ``trainer.compute_loss(model, batch)``.
    Returns the loss and the logits (for metrics)."""

    def __init__(self, model: nn.Module, trainer: Any) -> None:
        super().__init__()
        self.model, self.trainer = model, trainer

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        loss, outputs = self.trainer.compute_loss(self.model, dict(batch), return_outputs=True)  # it may pop labels
        logits = outputs.get("logits") if isinstance(outputs, Mapping) else getattr(outputs, "logits", None)
        return {"loss": loss, "logits": logits}


def _batch(batch: Any) -> tuple[tuple, dict, Any]:
    """``batch_fn``: the whole dict is ``compute_loss``'s input; its labels are the metrics' target."""
    if not isinstance(batch, Mapping):
        raise TypeError(f"a Trainer's batches are dicts of model inputs, got {type(batch).__name__}")
    return (batch,), {}, batch.get("labels")


def _amp(args: Any) -> bool | str:
    return "bf16" if getattr(args, "bf16", False) else "fp16" if getattr(args, "fp16", False) else False


@contextlib.contextmanager
def _trainer_optimizer(trainer: Any) -> Iterator[torch.optim.Optimizer]:
    """The Trainer's optimizer (made by ``create_optimizer`` when it has none yet, and forgotten again
    afterwards, so ``train()`` makes its own as it would have)."""
    before = trainer.optimizer
    try:
        yield before if before is not None else trainer.create_optimizer()
    finally:
        trainer.optimizer = before


def _end(loader: Any) -> None:
    """accelerate's loaders register with its GradientState while iterated; a test that stops mid-epoch
    leaves the loader registered: ``end()`` (public) takes it out."""
    if callable(getattr(loader, "end", None)):
        loader.end()


def lr_find(trainer: Any, *, quiet: bool = False, **finder_options: Any) -> LRFindResult:
    """onecycle's LR range test on ``trainer`` (a ``transformers.Trainer``): see the module's docstring.
    It prints its bar and every rule's suggestion, as ``Learner.lr_find`` does, unless ``quiet``."""
    trainer_cls = _check_installed()
    C.check_type("trainer", trainer, trainer_cls)
    C.check_bool("quiet", quiet)
    if trainer.train_dataset is None:
        raise ValueError("trainer has no train_dataset: the range test trains on it")
    metrics = finder_options.pop("metrics", ())
    C.check_keywords("lr_find", finder_options, lr_find, [find], sets={
        "learn": "", "use_wd": "the optimizer's own weight decay is used"})
    args = trainer.args
    model = trainer.model
    device = next(model.parameters()).device
    train_dl = trainer.get_train_dataloader()
    valid_dl = trainer.get_eval_dataloader() if trainer.eval_dataset is not None else None
    clip = args.max_grad_norm if args.max_grad_norm and args.max_grad_norm > 0 else None
    learn = Learner(_ComputeLoss(model, trainer), train_dl, valid_dl, loss_fn=None, metrics=metrics, device=device,
                    batch_fn=_batch, accum=args.gradient_accumulation_steps, clip=clip, amp=_amp(args), quiet=quiet,
                    channels_last=False)
    try:
        with _trainer_optimizer(trainer) as opt:
            learn.use_opt(opt)
            return find(learn, use_wd=False, **finder_options)
    finally:
        for dl in (train_dl, valid_dl):
            _end(dl)


def total_steps(trainer: Any) -> int:
    """The optimizer steps ``trainer.train()`` takes: what a scheduler given as ``optimizers=(opt,
    sched)`` must span. The Trainer's own count (``args.max_steps`` when set, else ``num_train_epochs``,
    fractions included, times its optimizer steps an epoch, from its train loader and gradient
    accumulation)."""
    C.check_type("trainer", trainer, _check_installed())
    if trainer.train_dataset is None:
        raise ValueError("trainer has no train_dataset: it takes no training step")
    args, loader = trainer.args, trainer.get_train_dataloader()
    try:
        if args.max_steps > 0:
            return int(args.max_steps)
        accum = args.gradient_accumulation_steps
        per_epoch = max(len(loader) // accum + int(len(loader) % accum > 0), 1)  # a partial window steps too
        return math.ceil(args.num_train_epochs * per_epoch)
    finally:
        _end(loader)
