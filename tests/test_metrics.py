"""Metrics against direct computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from onecycle import metrics as M


def test_accuracy_and_top_k():
    preds = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.4, 0.35, 0.25]])
    targets = torch.tensor([1, 0, 1, 1])
    assert M.accuracy(preds, targets).item() == pytest.approx(0.5)
    assert M.top_k_accuracy(preds, targets, k=2).item() == pytest.approx(1.0)
    assert M.top_k_accuracy(preds, targets, k=1).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="k"):
        M.top_k_accuracy(preds, targets, k=0)


def test_sequence_outputs_are_flattened():
    torch.manual_seed(0)
    preds, targets = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    ce = F.cross_entropy(preds.reshape(-1, 7), targets.reshape(-1)).item()
    assert M.perplexity(preds, targets).item() == pytest.approx(math.exp(ce), rel=1e-5)
    assert M.bits_per_char(preds, targets).item() == pytest.approx(ce / math.log(2), rel=1e-5)


def test_names():
    import functools
    assert M.metric_name(M.accuracy) == "accuracy"
    assert M.metric_name(functools.partial(M.top_k_accuracy, k=3)) == "top_k_accuracy"
