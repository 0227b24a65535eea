"""A run's Learner built from its config: the task (built-in, or the user's ``package.module:function``),
the model (built-in or the user's), the seed set before either is made. Every mistake in a reference
or its options is a ``ConfigError`` naming the key, not a traceback from inside the user's code."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

from .runconfig import ConfigError, FindConfig, is_ref

__all__ = ["resolve_ref", "load_run_task", "build_model", "build_learner"]


def resolve_ref(ref: str, what: str) -> Callable:
    """The callable ``package.module:function`` names, imported from the current folder too (as
    ``python -m`` would); ``ConfigError`` naming the reference otherwise."""
    module_name, _, attr_path = ref.partition(":")
    if not module_name or not attr_path:
        raise ConfigError(f"{what} {ref!r} must look like package.module:function", what)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise ConfigError(f"{what} {ref!r}: no module named {err.name!r}", what) from err
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{what} {ref!r}: {obj.__name__!r} has no attribute {part!r}", what)
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{what} {ref!r} is not callable (a {type(obj).__name__})", what)
    return obj


def _call_with(fn: Callable, ref: str, what: str, kwargs: dict[str, Any], optional: dict[str, Any]) -> Any:
    """``fn(**kwargs, **optional)``, leaving out ``optional`` keys ``fn`` does not take; a key of
    ``kwargs`` it does not take is a ``ConfigError``."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin or C callable: pass everything
        params = {}
    var_kw = not params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    for key in kwargs:
        if not var_kw and key not in params:
            raise ConfigError(f"{what}_opts: {what} {ref!r} takes no option {key!r}", f"{what}_opts")
    chosen = {k: v for k, v in optional.items() if var_kw or k in params}
    return _call_checked(fn, ref, what, (), {**kwargs, **chosen})


def _call_checked(fn: Callable, ref: str, what: str, args: tuple, kwargs: dict[str, Any]) -> Any:
    """``fn(*args, **kwargs)``; a signature that cannot take them is a ``ConfigError`` naming ``what``,
    not a traceback from inside the call."""
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except ValueError:  # no signature to read (some builtins): the call itself must tell
        try:
            return fn(*args, **kwargs)
        except TypeError as err:
            raise ConfigError(f"{what} {ref!r} cannot be called with {_shown(args, kwargs)}: {err}", what) from err
    except TypeError as err:
        raise ConfigError(f"{what} {ref!r} cannot be called with {_shown(args, kwargs)}: {err}", what) from err
    return fn(*args, **kwargs)


def _shown(args: tuple, kwargs: dict[str, Any]) -> str:
    shown = [*(type(a).__name__ for a in args), *(f"{k}=..." for k in kwargs)]
    return "(" + ", ".join(shown) + ")" if shown else "no arguments"


def load_run_task(cfg: FindConfig) -> Any:
    """The task ``cfg.task`` names, built with ``batch_size`` (when set), ``seed`` (when the
    builder takes one) and ``task_opts``."""
    from .tasks import TASKS, Task
    fn = TASKS[cfg.task] if cfg.task in TASKS else resolve_ref(cfg.task, "task")
    bs = {"batch_size": cfg.batch_size} if cfg.batch_size else {}
    task = _call_with(fn, cfg.task, "task", {**bs, **cfg.task_opts}, {"seed": cfg.seed})
    if not isinstance(task, Task):
        raise ConfigError(f"task {cfg.task!r} returned {type(task).__name__}, not onecycle.tasks.Task", "task")
    return task


def build_model(cfg: FindConfig, task: Any) -> Any:
    from torch import nn

    from .models import create_model
    if not cfg.model and task.model is not None:
        return task.model
    name = cfg.model or task.default_model
    if is_ref(name):
        model = _call_checked(resolve_ref(name, "model"), name, "model", (task.in_shape, task.n_out), cfg.model_opts)
    else:
        try:
            model = create_model(name, task.in_shape, task.n_out, **cfg.model_opts)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"model_opts {cfg.model_opts!r} do not fit model {name!r}: {err}", "model_opts") \
                from err
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {name!r} built {type(model).__name__}, not a torch.nn.Module", "model")
    return model


def build_learner(cfg: FindConfig) -> tuple[Any, Any]:
    """(Learner, Task) for ``cfg``: the seed is set before the data and the model are made."""
    import torch

    from .learner import Learner
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    task = load_run_task(cfg)
    model = build_model(cfg, task)
    learn = Learner(model, task.train_dl, task.valid_dl, task.loss_fn, opt=cfg.opt, metrics=task.metrics,
                    wd=cfg.wd, clip=cfg.clip or None, quiet=cfg.quiet, device=cfg.device or None)
    return learn, task
