"""Tests for onecycle.integrations.tensorboard: the logger writes what the recorder holds (against a
stand-in SummaryWriter, whatever is installed), and the missing package names its extra."""

from __future__ import annotations

import sys

import pytest

from onecycle.integrations.tensorboard import TensorBoardLogger, check_tensorboard, tensorboard_writer
from onecycle.runbuild import build_learner
from onecycle.runconfig import FitConfig, make_config


class _FakeWriter:
    """Records what a ``torch.utils.tensorboard.SummaryWriter`` is given (the methods the logger calls)."""
    made: list = []

    def __init__(self, log_dir=None):
        self.log_dir, self.scalars, self.flushes = log_dir, {}, 0
        _FakeWriter.made.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.setdefault(tag, []).append((step, value))

    def flush(self):
        self.flushes += 1


def test_tensorboard_logger_with_a_learner():
    cfg = make_config(FitConfig, [("test", {"task": "_cli_task:tiny", "quiet": True})])
    learn, _ = build_learner(cfg)
    writer = _FakeWriter()
    learn.fit_one_cycle(2, 0.1, callbacks=[TensorBoardLogger(writer)])
    iters = len(learn.recorder.losses)
    assert iters == 2 * 16
    assert [s for s, _ in writer.scalars["lr/group_0"]] == list(range(iters))
    assert [v for _, v in writer.scalars["lr/group_0"]] == learn.recorder.group_lrs[0]
    assert [v for _, v in writer.scalars["metrics/accuracy"]] == learn.recorder.metrics["accuracy"]
    assert [v for _, v in writer.scalars["momentum"]] == learn.recorder.moms
    assert [v for _, v in writer.scalars["loss/valid"]] == learn.recorder.val_losses


def test_a_missing_package_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` raises ImportError
    for call in (check_tensorboard, lambda: tensorboard_writer(tmp_path)):
        with pytest.raises(ImportError, match=r"pip install 'onecycle\[tensorboard\]'"):
            call()
    assert list(tmp_path.iterdir()) == []


def test_importing_the_integrations_package_imports_no_integration():
    import subprocess
    code = ("import sys, onecycle.integrations\nprint(sorted(m for m in sys.modules\n"
            "             if m.startswith(('onecycle.integrations.', 'torch.utils.tensorboard'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
