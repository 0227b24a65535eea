"""Metrics against direct computations."""

import functools
import math

import pytest
import torch
import torch.nn.functional as F
import torchmetrics  # the dev extra (the library itself imports it never)
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassPrecision

from onecycle import metrics as M


def test_accuracy_and_top_k():
    preds = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.4, 0.35, 0.25]])
    targets = torch.tensor([1, 0, 1, 1])
    assert M.accuracy(preds, targets).item() == pytest.approx(0.5)
    assert M.top_k_accuracy(preds, targets, k=2).item() == pytest.approx(1.0)
    assert M.top_k_accuracy(preds, targets, k=1).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="k"):
        M.top_k_accuracy(preds, targets, k=0)
    with pytest.raises(TypeError, match=r"^k must be an int >= 1, got True$"):  # once taken for k=1
        M.top_k_accuracy(preds, targets, k=True)


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


# ---- naming ---------------------------------------------------------------------------------------
CPU = torch.device("cpu")
SIZES = (17, 13, 10)  # uneven batches
N = sum(SIZES)


def _data(n=N, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g), torch.randint(0, c, (n,), generator=g)


def _accumulate(acc, preds, targets, sizes=SIZES, losses=None):
    start = 0
    for i, n in enumerate(sizes):
        acc.add(preds[start:start + n], targets[start:start + n], **({} if losses is None else {"loss": losses[i]}))
        start += n
    return acc.result()


def test_named_metrics_orders_and_names():
    top2 = functools.partial(M.top_k_accuracy, k=2)
    assert M.named_metrics(None) == {}
    assert list(M.named_metrics([M.accuracy, top2]).items()) == [("accuracy", M.accuracy), ("top_k_accuracy", top2)]
    assert list(M.named_metrics({"b": M.accuracy, "a": top2})) == ["b", "a"]  # the Mapping's order
    assert M.metric_name(MulticlassF1Score(3)) == "MulticlassF1Score"


@pytest.mark.parametrize("metrics, dup", [
    ([functools.partial(M.top_k_accuracy, k=1), functools.partial(M.top_k_accuracy, k=2)], "'top_k_accuracy'"),
    ([torchmetrics.F1Score(task="multiclass", num_classes=3, average="macro"),
      torchmetrics.F1Score(task="multiclass", num_classes=3, average="weighted")], "'MulticlassF1Score'"),
])
def test_duplicate_names_raise_naming_them(metrics, dup):
    with pytest.raises(ValueError, match=f"{dup}.*metrics=\\{{'name'"):
        M.named_metrics(metrics)
    with pytest.raises(ValueError, match=dup):
        M.MetricAccumulator(None, metrics, CPU)  # a sequence is named by named_metrics: never merged
    bad = [M.accuracy, M.accuracy, M.perplexity, M.perplexity]
    with pytest.raises(ValueError, match="'accuracy', 'perplexity'"):
        M.named_metrics(bad)


def test_named_metrics_bad_input():
    with pytest.raises(TypeError, match="3"):
        M.named_metrics([M.accuracy, 3])
    with pytest.raises(TypeError, match="1 \\(int\\)"):
        M.named_metrics({1: M.accuracy})
    with pytest.raises(TypeError, match="'f1'.*'abc'"):
        M.named_metrics({"f1": "abc"})
    with pytest.raises(ValueError, match="''"):
        M.named_metrics({"": M.accuracy})
    for single in (M.accuracy, "accuracy", MulticlassAccuracy(3)):
        with pytest.raises(TypeError, match="metrics=\\[m\\]"):
            M.named_metrics(single)
    with pytest.raises(ValueError, match="val_loss"):
        M.named_metrics({"val_loss": M.accuracy})
    with pytest.raises(TypeError, match="loss_fn.*'ce'"):
        M.MetricAccumulator("ce", {}, CPU)


# ---- accumulation against references --------------------------------------------------------------
def test_mapping_names_record_each_metric_against_references():
    preds, targets = _data()
    metrics = {"top1": functools.partial(M.top_k_accuracy, k=1), "top2": functools.partial(M.top_k_accuracy, k=2),
               "f1_macro": torchmetrics.F1Score(task="multiclass", num_classes=3, average="macro"),
               "f1_weighted": torchmetrics.F1Score(task="multiclass", num_classes=3, average="weighted")}
    out = _accumulate(M.MetricAccumulator(F.cross_entropy, metrics, CPU), preds, targets)
    assert list(out) == ["val_loss", "top1", "top2", "f1_macro", "f1_weighted"]
    assert all(type(v) is float for v in out.values())
    # hand references over the concatenated data
    ranks = (preds > preds.gather(1, targets[:, None])).sum(1)  # classes scored above the target's
    assert out["top1"] == pytest.approx((ranks == 0).float().mean().item())
    assert out["top2"] == pytest.approx((ranks <= 1).float().mean().item())
    assert out["top1"] != out["top2"]
    assert out["val_loss"] == pytest.approx(F.cross_entropy(preds, targets).item(), rel=1e-6)
    # torchmetrics directly, and F1 by hand from the confusion counts
    from torchmetrics.functional.classification import multiclass_f1_score
    for avg in ("macro", "weighted"):
        ref = multiclass_f1_score(preds, targets, num_classes=3, average=avg).item()
        assert out[f"f1_{avg}"] == pytest.approx(ref, rel=1e-6)
    assert out["f1_macro"] == pytest.approx(_hand_f1(preds, targets).mean().item())
    support = torch.bincount(targets, minlength=3).float()
    assert out["f1_weighted"] == pytest.approx((_hand_f1(preds, targets) * support).sum().item() / N)
    assert out["f1_macro"] != pytest.approx(out["f1_weighted"])


def _hand_f1(preds, targets):
    guess = preds.argmax(1)
    f1 = []
    for c in range(3):
        tp = ((guess == c) & (targets == c)).sum().item()
        fp = ((guess == c) & (targets != c)).sum().item()
        fn = ((guess != c) & (targets == c)).sum().item()
        f1.append(2 * tp / (2 * tp + fp + fn))
    return torch.tensor(f1, dtype=torch.float64)


def test_f1_mapping_against_sklearn():
    sk_metrics = pytest.importorskip("sklearn.metrics")  # the data extra
    preds, targets = _data(seed=5)
    metrics = {a: torchmetrics.F1Score(task="multiclass", num_classes=3, average=a) for a in ("macro", "weighted")}
    out = _accumulate(M.MetricAccumulator(None, metrics, CPU), preds, targets)
    for avg in ("macro", "weighted"):
        assert out[avg] == pytest.approx(sk_metrics.f1_score(targets.numpy(), preds.argmax(1).numpy(), average=avg))


def _collection(**kw):
    return torchmetrics.MetricCollection([MulticlassAccuracy(3, average="micro"), MulticlassPrecision(3)], **kw)


def test_metric_collection_records_one_column_per_key():
    preds, targets = _data(seed=1)
    ref = _collection()
    ref.update(preds, targets)
    expected = {k: v.item() for k, v in ref.compute().items()}
    assert list(expected) == ["MulticlassAccuracy", "MulticlassPrecision"]
    out = _accumulate(M.MetricAccumulator(F.cross_entropy, M.named_metrics([_collection()]), CPU), preds, targets)
    assert list(out) == ["val_loss", *expected]
    assert out["MulticlassAccuracy"] == pytest.approx(expected["MulticlassAccuracy"])
    assert out["MulticlassPrecision"] == pytest.approx(expected["MulticlassPrecision"])
    assert out["MulticlassAccuracy"] == pytest.approx((preds.argmax(1) == targets).float().mean().item())
    # a name chosen in a Mapping joins as torchmetrics' prefix does: {"val": c} reads like prefix="val_"
    prefixed = _collection(prefix="val_")
    prefixed.update(preds, targets)
    out = _accumulate(M.MetricAccumulator(None, {"val": _collection()}, CPU), preds, targets)
    assert out == pytest.approx({k: v.item() for k, v in prefixed.compute().items()})
    assert list(out) == ["val_MulticlassAccuracy", "val_MulticlassPrecision"]


def test_stateful_metrics_are_reset_at_start():
    preds, targets = _data(seed=2)
    acc = MulticlassAccuracy(3, average="micro")
    acc.update(torch.eye(3), torch.tensor([1, 2, 0]))  # all wrong: stale state must not count
    out = _accumulate(M.MetricAccumulator(None, {"acc": acc}, CPU), preds, targets)
    assert out["acc"] == pytest.approx((preds.argmax(1) == targets).float().mean().item())


def _stats(preds, targets):
    return {"mean_pred": preds.mean(), "hits": (preds.argmax(-1) == targets).float().mean()}


def test_dict_function_one_column_per_key_weighted_by_targets():
    preds = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 4.0]])
    targets = torch.tensor([0, 0, 0, 1])
    metrics = M.named_metrics([_stats, M.accuracy])
    out = _accumulate(M.MetricAccumulator(None, metrics, CPU), preds, targets, sizes=(3, 1))
    # batch 1 (3 targets): mean_pred 4/6, hits 2/3; batch 2 (1 target): mean_pred 2, hits 1
    assert list(out) == ["mean_pred", "hits", "accuracy"]
    assert out["mean_pred"] == pytest.approx((3 * 4 / 6 + 1 * 2.0) / 4)  # = 8/8 over all 8 scores
    assert out["hits"] == pytest.approx(3 / 4) and out["accuracy"] == pytest.approx(3 / 4)
    named = _accumulate(M.MetricAccumulator(None, {"s": _stats}, CPU), preds, targets, sizes=(3, 1))
    assert named == {"s_mean_pred": out["mean_pred"], "s_hits": out["hits"]}


def test_geometric_average_also_through_a_partial():
    preds, targets = _data(seed=3)
    ce = F.cross_entropy(preds, targets).item()
    metrics = {"ppl": functools.partial(M.perplexity), "perplexity": M.perplexity}
    out = _accumulate(M.MetricAccumulator(None, metrics, CPU), preds, targets)
    assert out["ppl"] == pytest.approx(math.exp(ce), rel=1e-6)
    assert out["perplexity"] == pytest.approx(math.exp(ce), rel=1e-6)


def test_target_none_weighs_by_len_preds():
    def mean_pred(preds, _):
        return preds.mean()
    acc = M.MetricAccumulator(None, {"m": mean_pred}, CPU)
    acc.add(torch.tensor([1.0, 2.0, 3.0]), None)
    acc.add(torch.tensor([10.0]), None)
    assert acc.result() == {"m": pytest.approx(16 / 4)}


# ---- the loss ---------------------------------------------------------------------------------------
def test_given_loss_is_used_instead_of_loss_fn():
    preds, targets = _data()

    def must_not_run(*_):
        raise AssertionError("loss_fn called although loss= was given")
    out = _accumulate(M.MetricAccumulator(must_not_run, {"acc": M.accuracy}, CPU), preds, targets,
                      losses=[torch.tensor(1.0), torch.tensor(2.0), 4.0])
    assert out["val_loss"] == pytest.approx((17 * 1.0 + 13 * 2.0 + 10 * 4.0) / 40)
    assert out["acc"] == pytest.approx((preds.argmax(1) == targets).float().mean().item())


def test_no_loss_fn_and_no_loss_gives_no_val_loss():
    preds, targets = _data()
    out = _accumulate(M.MetricAccumulator(None, {"acc": M.accuracy}, CPU), preds, targets)
    assert list(out) == ["acc"]
    acc = M.MetricAccumulator(None, {}, CPU)  # a batch with a loss and one without: the mean is over the first
    acc.add(preds[:3], targets[:3], loss=torch.tensor(0.5))
    acc.add(preds[3:], targets[3:])
    assert acc.result() == {"val_loss": pytest.approx(0.5)}


def test_reduce_combines_sums_and_counts_of_ranks():
    preds, targets = _data(seed=4)
    metrics = lambda: {"acc": M.accuracy, "s": _stats, "ppl": M.perplexity}  # noqa: E731
    whole = _accumulate(M.MetricAccumulator(F.cross_entropy, metrics(), CPU), preds, targets)
    other = M.MetricAccumulator(F.cross_entropy, metrics(), CPU)  # rank 1: the last batch, weight 10 of 40
    other.add(preds[30:], targets[30:])
    seen = []
    other.result(reduce=lambda t: seen.append(t.clone()) or t)
    rank0 = M.MetricAccumulator(F.cross_entropy, metrics(), CPU)
    rank0.add(preds[:17], targets[:17])
    rank0.add(preds[17:30], targets[17:30])
    assert rank0.result(reduce=lambda t: t + seen[0]) == pytest.approx(whole, rel=1e-9)
    scalar = lambda: {"acc": M.accuracy, "ppl": M.perplexity}  # noqa: E731
    ref = M.MetricAccumulator(F.cross_entropy, scalar(), CPU)
    ref.add(preds, targets)
    seen.clear()
    expected = ref.result(reduce=lambda t: seen.append(t.clone()) or t)
    empty = M.MetricAccumulator(F.cross_entropy, scalar(), CPU)  # a rank with no batch: zeros, same layout
    assert empty.result(reduce=lambda t: t + seen[0]) == pytest.approx(expected, rel=1e-9)


# ---- refusals ---------------------------------------------------------------------------------------
def test_per_class_tensor_raises_naming_the_metric_before_any_change():
    preds, targets = _data()

    def per_class(p, t):
        return (p.argmax(1)[:, None] == torch.arange(3)).float().mean(0)
    acc = M.MetricAccumulator(F.cross_entropy, {"acc": M.accuracy, "per_class": per_class}, CPU)
    with pytest.raises(ValueError, match="'per_class'.*shape \\(3,\\).*reduce"):
        acc.add(preds, targets)
    with pytest.raises(ValueError, match="no batch"):  # nothing of that batch was kept
        acc.result()
    loss_acc = M.MetricAccumulator(functools.partial(F.cross_entropy, reduction="none"), {}, CPU)
    with pytest.raises(ValueError, match="loss.*shape \\(40,\\)"):
        loss_acc.add(preds, targets)
    with pytest.raises(TypeError, match="'bad'.*'x'"):
        M.MetricAccumulator(None, {"bad": lambda p, t: "x"}, CPU).add(preds, targets)


def test_per_class_compute_raises_naming_the_metric():
    preds, targets = _data()
    acc = M.MetricAccumulator(None, {"pc": MulticlassAccuracy(3, average=None)}, CPU)
    acc.add(preds, targets)
    with pytest.raises(ValueError, match="'pc'.*shape \\(3,\\).*reduce"):
        acc.result()


def test_empty_accumulator_raises():
    with pytest.raises(ValueError, match="no batch"):
        M.MetricAccumulator(F.cross_entropy, {"acc": M.accuracy}, CPU).result()
    acc = M.MetricAccumulator(F.cross_entropy, {"acc": M.accuracy}, CPU)
    acc.add(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))  # an empty share adds nothing
    with pytest.raises(ValueError, match="no batch"):
        acc.result()
    with pytest.raises(ValueError, match="no batch"):  # every rank empty
        acc.result(reduce=lambda t: t)


def test_column_collisions_raise_never_overwrite():
    preds, targets = _data()

    def other_stats(p, t):
        return {"hits": torch.tensor(0.0)}
    for metrics, col in (([_stats, other_stats], "'hits'"), ({"hits": M.accuracy, "_stats": _stats}, "'hits'"),
                         ([lambda p, t: {"val_loss": 0.0}], "'val_loss'")):
        acc = M.MetricAccumulator(None, M.named_metrics(metrics), CPU)
        acc.add(preds, targets)
        with pytest.raises(ValueError, match=col):
            acc.result()
    out = _accumulate(M.MetricAccumulator(None, {"a": _stats, "b": other_stats}, CPU), preds, targets)
    assert list(out) == ["a_mean_pred", "a_hits", "b_hits"] and out["b_hits"] == 0.0


def test_changing_keys_raise():
    preds, targets = _data()
    calls = []

    def shifty(p, t):
        calls.append(1)
        return {"a": 1.0} if len(calls) == 1 else {"b": 1.0}
    acc = M.MetricAccumulator(None, {"s": shifty}, CPU)
    acc.add(preds[:2], targets[:2], loss=1.0)
    with pytest.raises(ValueError, match="'s'.*\\['b'\\].*\\['a'\\]"):
        acc.add(preds[2:], targets[2:], loss=3.0)
    assert acc.result() == {"val_loss": 1.0, "s_a": 1.0}  # the refused batch left nothing behind


@pytest.mark.parametrize("name, lower", [
    ("val_loss", True), ("train_loss", True), ("l1_loss", True), ("perplexity", True), ("bits_per_char", True),
    ("error", True), ("error_rate", True), ("val_perplexity", True), ("accuracy", False), ("top_k_accuracy", False),
    ("MulticlassAccuracy", False), ("f1", False),
])
def test_lower_is_better_reads_the_direction_from_the_column_name(name, lower):
    assert M.lower_is_better(name) is lower



def test_is_fraction_reads_accuracy_like_names():
    assert M.is_fraction("accuracy") and M.is_fraction("val_MulticlassF1Score") and M.is_fraction("error")
    assert not M.is_fraction("val_loss") and not M.is_fraction("perplexity") and not M.is_fraction("accuracy_loss")



def test_a_metric_says_its_direction_else_its_name_does():
    def error_rate(preds, targets):
        return 1 - M.accuracy(preds, targets)

    def goodness(preds, targets):
        return M.accuracy(preds, targets)

    goodness.higher_is_better = False  # what a metric says wins over its name (a negative control for the rule)
    assert M.higher_is_better(M.accuracy) and M.higher_is_better(M.top_k_accuracy)
    assert not M.higher_is_better(M.perplexity) and not M.higher_is_better(M.bits_per_char)
    assert not M.higher_is_better(error_rate) and not M.higher_is_better(goodness)
    assert not M.higher_is_better(functools.partial(goodness))  # a partial's function says it
    assert M.higher_is_better(MulticlassAccuracy(num_classes=3))  # torchmetrics objects carry higher_is_better
    assert MulticlassAccuracy.higher_is_better is True and torchmetrics.MeanSquaredError.higher_is_better is False
    assert not M.higher_is_better(torchmetrics.MeanSquaredError(), "whatever")
    coll = torchmetrics.MetricCollection([MulticlassAccuracy(num_classes=3), torchmetrics.MeanSquaredError()])
    named = M.named_metrics({"err": error_rate, "good": goodness, "val": coll, "acc": M.accuracy})
    assert M.metric_directions(named) == {"err": False, "good": False, "val_MulticlassAccuracy": True,
                                          "val_MeanSquaredError": False, "acc": True}
    assert M.metric_directions(named).keys() == set(M.metric_columns(named))


def test_percent_columns_are_accuracy_like_fractions():
    assert M.percent_column("accuracy", [0.5, 1.0, float("nan")]) and not M.percent_column("accuracy", [0.5, 95.0])
    assert not M.percent_column("val_loss", [0.5]) and M.percent_column("f1_macro", [])


# ---- mutation-testing additions: top-k's defaults and bounds, directions by column, percent bounds --------
def test_top_k_defaults_to_5_and_never_asks_for_more_classes_than_there_are():
    scores = torch.arange(10.0).flip(0).repeat(4, 1)  # class 0 ranks 1st, ..., class 9 ranks 10th
    targets = torch.tensor([4, 5, 9, 0])  # ranks 5, 6, 10, 1
    assert M.top_k_accuracy(scores, targets).item() == 0.5  # k=5: ranks 5 and 1 count
    assert M.top_k_accuracy(scores, targets, k=6).item() == 0.75
    many = torch.randn(20, 3)  # 20 samples, 3 classes: k=10 is every class
    assert M.top_k_accuracy(many, torch.randint(0, 3, (20,)), k=10).item() == 1.0


class _Stateful:
    """The torchmetrics protocol without keys(): one column."""

    def update(self, preds, targets):
        pass

    def compute(self):
        return 0.0

    def reset(self):
        pass


class _Collection(_Stateful):
    """A MetricCollection-like object: keys() and members by key, each member saying its direction or not."""

    def __init__(self, members):
        self.members = members

    def keys(self):
        return self.members.keys()

    def __getitem__(self, key):
        return self.members[key]


class _Member:
    def __init__(self, higher_is_better=None):
        if higher_is_better is not None:
            self.higher_is_better = higher_is_better


class _KeysOnly(_Stateful):
    """keys() and no way to look up its members: the direction comes from each column's name."""

    def __init__(self, keys):
        self._keys = list(keys)

    def keys(self):
        return self._keys


class error_metrics(_Collection):  # noqa: N801 (a lower-case class name: the name rule reads it)
    """A collection whose own name says lower is better: members without a word of their own follow it."""


def test_directions_and_columns_of_collections_by_their_members_then_by_the_column_names():
    def score(preds, targets):
        return 0.0

    coll = _Collection({"agreement": _Member(False), "hits": _Member(True), "mse_loss": _Member(),
                        "top_error": _Member()})
    metrics = {"_Collection": coll, "v": _Collection({"x": _Member(), "acc": _Member(False)}), "my_error": score,
               "s": score, "plain": _Stateful(), "k": _KeysOnly(["rate", "val_loss"])}
    assert M.metric_columns(metrics) == ["agreement", "hits", "mse_loss", "top_error", "v_x", "v_acc", "my_error",
                                         "s", "plain", "k_rate", "k_val_loss"]
    assert M.metric_directions(metrics) == {
        "agreement": False, "hits": True, "mse_loss": False, "top_error": False,  # its own name: keys as they are
        "v_x": True, "v_acc": False,  # another name: prefixed; a member's own word wins over the name
        "my_error": False, "s": True, "plain": True, "k_rate": True, "k_val_loss": False}
    assert M.metric_directions({"top_error": score}) == {"top_error": False}  # by the column's name
    assert M.metric_directions({"e": error_metrics({"rate": _Member(), "hits": _Member(True)})}) == {
        "e_rate": False, "e_hits": True}  # a member without a word follows its collection's name
    assert M.higher_is_better(score) and M.higher_is_better(score, "val_acc")
    assert not M.higher_is_better(score, "l_loss")


def test_percent_column_bounds():
    assert M.percent_column("acc", [0.0, 0.5]) and M.percent_column("acc", [-1e-9, 1 + 1e-9])  # rounding kept
    assert not M.percent_column("acc", [-0.5]) and not M.percent_column("acc", [1.5])
    assert not M.percent_column("acc", [1 + 1e-8]) and not M.percent_column("acc", [-1e-8])


def test_a_metric_that_changes_from_a_number_to_keys_is_named_in_both_forms():
    calls = []

    def shifty(p, t):
        calls.append(1)
        return 1.0 if len(calls) == 1 else {"b": 1.0}

    preds, targets = _data()
    acc = M.MetricAccumulator(None, {"s": shifty}, CPU)
    acc.add(preds[:2], targets[:2], loss=1.0)
    with pytest.raises(ValueError) as info:
        acc.add(preds[2:], targets[2:], loss=3.0)
    assert str(info.value) == ("metric 's' gave keys ['b'] for this batch but a number before; a metric must give "
                               "the same keys for every batch")


def test_named_metrics_messages_in_full():
    with pytest.raises(TypeError) as info:
        M.named_metrics(M.accuracy)
    assert str(info.value).endswith(" (a single metric goes in a list: metrics=[m])")
    coll = torchmetrics.MetricCollection([MulticlassAccuracy(3)])  # iterable, and one metric: refused too
    with pytest.raises(TypeError, match=r"a single metric goes in a list"):
        M.named_metrics(coll)
    with pytest.raises(TypeError, match=r"^metrics\[1\] must be a function .* got 5 \(int\)$"):
        M.named_metrics([M.accuracy, 5])
    with pytest.raises(ValueError) as info:
        M.named_metrics([M.accuracy, M.accuracy])
    assert str(info.value) == ("metrics: several metrics are named 'accuracy', and one column would hold only the "
                               "last one's values; name each: metrics={'name': m, ...}")
    with pytest.raises(ValueError) as info:
        M.named_metrics({"val_loss": M.accuracy})
    assert str(info.value) == "metrics: 'val_loss' is the loss's column; give the metric another name"
    stateful = _Stateful()  # the protocol, and no __call__: a metric all the same
    assert M.named_metrics([stateful]) == {"_Stateful": stateful}


class _Unnamed:
    def __call__(self, preds, targets):
        return 0.0


def test_metric_name_of_a_partial_of_an_unnamed_callable_is_partial():
    assert M.metric_name(functools.partial(_Unnamed())) == "partial"
    assert M.metric_name(functools.partial(M.accuracy)) == "accuracy"

    def f(p, t):
        return 0.0

    f.update = lambda *a: None  # update alone is not the torchmetrics protocol
    assert not M._is_stateful(f) and M._is_stateful(_Stateful())


def test_value_messages_name_the_metric_the_key_and_the_type():
    preds, targets = _data()
    acc = M.MetricAccumulator(None, {"m": lambda p, t: {"k": "x"}}, CPU)
    with pytest.raises(TypeError) as info:
        acc.add(preds, targets)
    assert str(info.value) == "metric 'm' (key 'k') gave 'x' (str); expected a number or a 0-d tensor"
    acc = M.MetricAccumulator(None, {"m": lambda p, t: torch.zeros(3)}, CPU)
    with pytest.raises(ValueError) as info:
        acc.add(preds, targets)
    assert str(info.value) == ("metric 'm' gave a tensor of shape (3,), not one number: reduce it (e.g. .mean()), "
                               "or return a dict of named numbers")
    acc = M.MetricAccumulator(None, {}, CPU)
    with pytest.raises(TypeError, match=r"^the loss gave 'x' \(str\)"):
        acc.add(preds, targets, loss="x")


def test_a_column_collision_names_both_owners():
    preds, targets = _data()
    acc = M.MetricAccumulator(None, {"hits": M.accuracy, "_stats": _stats}, CPU)
    acc.add(preds, targets)
    with pytest.raises(ValueError) as info:
        acc.result()
    assert str(info.value) == ("metric '_stats' and metric 'hits' both give a column 'hits'; one would overwrite the "
                               "other: name them apart, metrics={'name': m, ...}")
    acc = M.MetricAccumulator(None, M.named_metrics([lambda p, t: {"val_loss": 0.0}]), CPU)
    acc.add(preds, targets, loss=1.0)
    with pytest.raises(ValueError, match=r"^metric '<lambda>' and the loss both give a column 'val_loss'"):
        acc.result()


class _NoReset:
    """The protocol's update and compute, and no reset to call."""

    def update(self, preds, targets):
        pass

    def compute(self):
        return 0.0


def test_one_target_is_enough_for_a_loss_and_sequence_batches_weigh_by_their_targets():
    acc = M.MetricAccumulator(F.cross_entropy, {"s": _NoReset()}, CPU)
    preds, targets = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
    acc.add(preds, targets)
    assert acc.result()["val_loss"] == pytest.approx(F.cross_entropy(preds, targets).item())
    # batches of 2 sequences of length 1 and 3: each target weighs the same, not each batch or sequence
    torch.manual_seed(0)
    a, b = torch.randn(2, 1, 4), torch.randn(2, 3, 4)
    ta, tb = torch.randint(0, 4, (2, 1)), torch.randint(0, 4, (2, 3))
    seq = M.MetricAccumulator(None, {"acc": M.accuracy}, CPU)
    seq.add(a, ta)
    seq.add(b, tb)
    hits = (a.argmax(-1) == ta).sum() + (b.argmax(-1) == tb).sum()
    assert seq.result()["acc"] == pytest.approx(hits.item() / 8)
