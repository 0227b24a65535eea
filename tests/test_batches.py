"""Any batch a PyTorch user has (``onecycle.batches`` and the Learner's ``forward``/``predict``).

Unit tests of ``split_batch``/``to_device``/``split_output``/``batch_size``; then dict batches,
dict outputs and a model's own loss trained through the Learner, each checked bit for bit against
the same run with tuple batches and tensor outputs; ``predict`` against the model called directly;
a random-init Hugging Face BERT trained from a DataLoader of dicts with nothing else written.
"""

from collections import OrderedDict, namedtuple
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import onecycle as oc
from onecycle.batches import TARGET_KEYS, batch_size, in_place, split_batch, split_output, to_device
from onecycle.metrics import accuracy

Pair = namedtuple("Pair", ["a", "b"])


# ---- split_batch ------------------------------------------------------------------------------
def test_split_batch_tuples_lists_and_bare_tensors():
    x, z, y = torch.randn(4, 2), torch.randn(4, 3), torch.arange(4)
    args, kwargs, target = split_batch((x, y))
    assert args == (x,) and kwargs == {} and target is y
    args, kwargs, target = split_batch([x, z, y])  # default collate of tuple samples gives a list
    assert isinstance(args, tuple) and args[0] is x and args[1] is z and kwargs == {} and target is y
    assert split_batch((x,)) == ((x,), {}, None)  # TensorDataset(x): inputs without a target
    args, kwargs, target = split_batch(x)
    assert args == (x,) and kwargs == {} and target is None


@pytest.mark.parametrize("key", TARGET_KEYS)
def test_split_batch_mapping_target_keys(key):
    x, y = torch.randn(4, 2), torch.arange(4)
    batch = {"x": x, key: y}
    args, kwargs, target = split_batch(batch)
    assert args == () and kwargs == {"x": x} and target is y
    assert batch == {"x": x, key: y}  # the loader's batch is left as it was
    args, kwargs, target = split_batch(batch, keep_target=True)  # loss_fn=None: the model takes its labels
    assert args == () and kwargs == {"x": x, key: y} and target is y


def test_split_batch_mapping_first_target_key_wins_and_no_target():
    a, b, x = torch.zeros(2), torch.ones(2), torch.randn(2, 3)
    args, kwargs, target = split_batch(OrderedDict([("y", b), ("x", x), ("labels", a)]))
    assert target is a and set(kwargs) == {"x", "y"}  # labels before y, whatever the dict's order
    assert split_batch({"input_ids": x}) == ((), {"input_ids": x}, None)


def test_split_batch_fn_overrides_both_rules():
    x, y = torch.randn(3, 2), torch.arange(3)
    # a Mapping with a target key, and a tuple: batch_fn decides, not the default rules
    args, kwargs, target = split_batch({"inp": x, "labels": y}, lambda b: ([b["inp"]], {"flag": 1}, b["labels"] * 2))
    assert args == (x,) and kwargs == {"flag": 1} and torch.equal(target, y * 2)
    args, kwargs, target = split_batch((y, x), lambda b: ((b[1],), {}, b[0]))
    assert args == (x,) and kwargs == {} and target is y


@pytest.mark.parametrize("bad, what", [
    (lambda b: (b, None), "a tuple of 2"),
    (lambda b: [(b,), {}, None], "list"),
    (lambda b: ((b,), [], None), "a tuple of 3"),
    (lambda b: (b, {}, None), "args of type Tensor"),  # tuple(a tensor) would have split it into rows
])
def test_split_batch_fn_wrong_shape_raises_type_error(bad, what):
    with pytest.raises(TypeError, match="batch_fn must return \\(args, kwargs, target\\)") as e:
        split_batch(torch.randn(3, 2), bad)
    assert what in str(e.value)


def test_split_batch_bad_batches_raise_type_error_naming_them():
    with pytest.raises(TypeError, match="got int; pass batch_fn"):
        split_batch(3)
    with pytest.raises(TypeError, match="got str"):
        split_batch("x")
    with pytest.raises(TypeError, match="empty tuple"):
        split_batch(())


def test_learner_fit_on_int_batches_raises_type_error():
    learn = oc.Learner(nn.Linear(2, 3), [1, 2, 3], quiet=True, device="cpu")
    with pytest.raises(TypeError, match="a batch must be a tuple .* got int"):
        learn.fit_one_cycle(1, 0.1)


# ---- to_device --------------------------------------------------------------------------------
def test_to_device_nested_structures_keep_their_types():
    img, ids = torch.randn(2, 3, 4, 5), torch.arange(6)
    obj = {"a": (img, [ids, "text", 3]), "b": Pair(ids, None), "c": [{"d": img}]}
    out = to_device(obj, torch.device("meta"))  # the meta device: every tensor really moved
    assert type(out) is dict and set(out) == {"a", "b", "c"}
    assert type(out["a"]) is tuple and type(out["a"][1]) is list and type(out["b"]) is Pair
    assert out["a"][1][1:] == ["text", 3] and out["b"].b is None  # other values as they are
    for t, ref in [(out["a"][0], img), (out["a"][1][0], ids), (out["b"].a, ids), (out["c"][0]["d"], img)]:
        assert t.device.type == "meta" and t.shape == ref.shape and t.dtype == ref.dtype
    back = to_device(obj, torch.device("cpu"))
    assert torch.equal(back["c"][0]["d"], img) and torch.equal(back["b"].a, ids)


def test_to_device_channels_last_only_on_4d_floating_tensors():
    img, mask, seq = torch.randn(2, 3, 4, 5), torch.ones(2, 3, 4, 5, dtype=torch.long), torch.randn(2, 3, 4)
    out = to_device((img, {"m": mask, "s": seq}), torch.device("cpu"), channels_last=True)
    nhwc = torch.channels_last
    assert out[0].is_contiguous(memory_format=nhwc) and not out[0].is_contiguous()
    assert torch.equal(out[0], img)  # same values, other layout
    assert out[1]["m"].is_contiguous() and not out[1]["m"].is_contiguous(memory_format=nhwc)
    assert out[1]["s"].is_contiguous() and out[1]["s"].stride() == seq.stride()
    plain = to_device(img, torch.device("cpu"))  # channels_last off: layout untouched
    assert plain.is_contiguous() and not plain.is_contiguous(memory_format=nhwc)


# ---- in_place ---------------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["cpu", "meta"])  # the CPU's shortcut, and any other device
def test_in_place_only_when_every_tensor_is_a_plain_tensor_already_there(device):
    """True only when ``to_device`` would move nothing: every positional argument a plain tensor on
    ``device``, the target one too or None. Anything else (another device, a subclass, a non-tensor)
    is left to ``to_device``."""
    dev, other = torch.device(device), torch.device("meta" if device == "cpu" else "cpu")
    x, y, far = torch.zeros(2, 3, device=dev), torch.zeros(2, device=dev), torch.zeros(2, device=other)
    assert in_place((x,), y, dev) and in_place((x, x), None, dev) and in_place((), None, dev)
    assert not in_place((far,), y, dev) and not in_place((x, far), y, dev)  # any argument elsewhere
    assert not in_place((x,), far, dev)  # the target elsewhere
    assert not in_place((nn.Parameter(x),), y, dev)  # a subclass: to_device decides
    assert not in_place((x,), nn.Parameter(y), dev)
    assert not in_place((x, 3), y, dev) and not in_place(([x],), y, dev)  # not a tensor
    assert not in_place((x,), [y], dev) and not in_place((x,), {"y": y}, dev)


# ---- split_output -----------------------------------------------------------------------------
def test_split_output_tensors_and_mappings():
    logits, loss, h = torch.randn(4, 3), torch.tensor(0.5), torch.randn(4, 8)
    assert split_output(logits) == (None, logits)
    own, preds = split_output({"loss": loss, "logits": logits, "hidden": h})
    assert own is loss and preds is logits
    own, preds = split_output({"logits": logits, "hidden": h})
    assert own is None and preds is logits
    own, preds = split_output({"loss": loss, "scores": h})  # one value besides the loss: that value
    assert own is loss and preds is h
    own, preds = split_output({"a": logits, "b": h})  # several, no logits: the Mapping without loss
    assert own is None and preds == {"a": logits, "b": h}
    own, preds = split_output({"loss": loss, "a": logits, "b": h})
    assert own is loss and preds == {"a": logits, "b": h}


def test_split_output_objects_with_loss_and_logits():
    logits, loss = torch.randn(4, 3), torch.tensor(0.5)
    own, preds = split_output(SimpleNamespace(loss=loss, logits=logits))
    assert own is loss and preds is logits
    own, preds = split_output(SimpleNamespace(logits=logits))
    assert own is None and preds is logits
    own, preds = split_output(SimpleNamespace(loss=loss))  # a loss alone: no predictions
    assert own is loss and preds is None
    other = SimpleNamespace(scores=logits)  # neither: the object itself is the predictions
    assert split_output(other) == (None, other)


def test_split_output_transformers_model_output():
    outputs = pytest.importorskip("transformers.modeling_outputs")
    logits, loss = torch.randn(4, 3), torch.tensor(0.5)
    own, preds = split_output(outputs.SequenceClassifierOutput(loss=loss, logits=logits))
    assert own is loss and preds is logits
    own, preds = split_output(outputs.SequenceClassifierOutput(logits=logits))  # no labels: no loss
    assert own is None and preds is logits


def test_split_batch_and_to_device_on_a_transformers_batch_encoding():
    transformers = pytest.importorskip("transformers")
    ids, y = torch.arange(6).view(2, 3), torch.tensor([0, 2])
    enc = transformers.BatchEncoding({"input_ids": ids, "attention_mask": torch.ones(2, 3), "labels": y})
    args, kwargs, target = split_batch(enc)  # a UserDict, not a dict: a Mapping all the same
    assert args == () and set(kwargs) == {"input_ids", "attention_mask"} and target is y
    assert "labels" in enc  # the tokenizer's batch itself is left as it was
    moved = to_device(enc, torch.device("meta"))
    assert set(moved) == set(enc) and all(v.device.type == "meta" for v in moved.values())


# ---- batch_size -------------------------------------------------------------------------------
def test_batch_size():
    assert batch_size(torch.zeros(3, 4, dtype=torch.long), torch.randn(3, 4, 7)) == 12  # targets, not samples
    assert batch_size(["a", "b", "c", "d", "e"], torch.randn(2)) == 5
    assert batch_size(None, torch.randn(7, 3)) == 7
    assert batch_size(None, {"meta": "x", "a": torch.randn(6, 2)}) == 6
    assert batch_size(None, torch.tensor(1.0)) == 1
    assert batch_size(None, {"meta": "x"}) == 1


# ---- training on dict batches and dict outputs ------------------------------------------------
def _xy(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return x, x[:, :3].argmax(1)  # learnable: which of the first three inputs is largest


X, Y = _xy(64, 0)
XV, YV = _xy(32, 1)


class DictData(Dataset):
    """Samples ``{xkey: x, key: y}``: default collate makes dict batches."""

    def __init__(self, x, y, key="labels", xkey="x"):
        self.x, self.y, self.key, self.xkey = x, y, key, xkey

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {self.xkey: self.x[i], self.key: self.y[i]}


class FlippedData(TensorDataset):
    """Samples ``(y, x)``: the target first."""

    def __getitem__(self, i):
        return super().__getitem__(i)[::-1]


def _loader(ds, shuffle=True, **kw):
    gen = torch.Generator().manual_seed(0) if shuffle else None
    return DataLoader(ds, batch_size=16, shuffle=shuffle, generator=gen, **kw)


class Net(nn.Module):
    """``out``: "tensor", "dict" ({"logits"}) or "own" ({"loss", "logits"}, label-smoothed CE)."""

    def __init__(self, out="tensor"):
        super().__init__()
        self.out = out
        self.body, self.head = nn.Linear(4, 16), nn.Linear(16, 3)

    def forward(self, x, labels=None):
        logits = self.head(torch.relu(self.body(x)))
        if self.out == "tensor":
            return logits
        if self.out == "dict":
            return {"logits": logits}
        return {"loss": _smoothed_ce(logits, labels), "logits": logits} if labels is not None else {"logits": logits}


def _smoothed_ce(logits, target):
    return F.cross_entropy(logits, target, label_smoothing=0.2)


def _fit(train, valid=None, out="tensor", epochs=2, **kw):
    torch.manual_seed(0)
    model = Net(out)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    learn = oc.Learner(model, train, valid, device="cpu", quiet=True, metrics=[accuracy], **kw)
    learn.fit_one_cycle(epochs, 0.5)
    return learn, init


def _assert_same_weights(a, b):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _assert_trained(learn, init):
    assert any(not torch.equal(v, init[k]) for k, v in learn.model.state_dict().items())


@pytest.fixture(scope="module")
def tuple_run():
    """The reference: tuple batches ``(x, y)``, a tensor-returning model, cross-entropy."""
    return _fit(_loader(TensorDataset(X, Y)), _loader(TensorDataset(XV, YV), shuffle=False))


@pytest.mark.parametrize("key", TARGET_KEYS)
def test_dict_batches_train_exactly_as_tuple_batches(tuple_run, key):
    ref, init = tuple_run
    learn, _ = _fit(_loader(DictData(X, Y, key)), _loader(DictData(XV, YV, key), shuffle=False))
    _assert_trained(ref, init)
    _assert_same_weights(learn, ref)
    assert learn.recorder.losses == ref.recorder.losses and len(ref.recorder.losses) == 2 * 4
    assert learn.recorder.val_losses == ref.recorder.val_losses
    assert learn.recorder.metrics == ref.recorder.metrics


def test_dict_batches_through_worker_processes():
    ref, init = _fit(_loader(TensorDataset(X, Y)), epochs=1)
    learn, _ = _fit(_loader(DictData(X, Y), num_workers=2), epochs=1)
    _assert_trained(learn, init)
    assert len(learn.recorder.losses) == 4 and all(torch.isfinite(torch.tensor(learn.recorder.losses)))
    _assert_same_weights(learn, ref)  # same order (the sampler draws in this process), same values


def test_batch_fn_overrides_the_default_rules(tuple_run):
    ref, _ = tuple_run
    # a Mapping whose inputs are under a name the model does not take, and its labels under "labels"
    fn = lambda b: ((b["inp"],), {}, b["labels"])  # noqa: E731
    learn, _ = _fit(_loader(DictData(X, Y, xkey="inp")), _loader(DictData(XV, YV, xkey="inp"), shuffle=False),
                    batch_fn=fn)
    _assert_same_weights(learn, ref)
    # a tuple in the other order: (target, inputs)
    learn, _ = _fit(_loader(FlippedData(X, Y)), _loader(FlippedData(XV, YV), shuffle=False),
                    batch_fn=lambda b: ((b[1],), {}, b[0]))
    _assert_same_weights(learn, ref)
    assert learn.recorder.val_losses == ref.recorder.val_losses


def test_dict_output_trains_exactly_as_tensor_output(tuple_run):
    ref, _ = tuple_run
    learn, _ = _fit(_loader(TensorDataset(X, Y)), _loader(TensorDataset(XV, YV), shuffle=False), out="dict")
    _assert_same_weights(learn, ref)
    assert learn.recorder.losses == ref.recorder.losses
    assert learn.recorder.metrics == ref.recorder.metrics


def test_models_own_loss_with_loss_fn_none():
    learn, init = _fit(_loader(DictData(X, Y)), _loader(DictData(XV, YV), shuffle=False), out="own", loss_fn=None)
    # the same loss computed by loss_fn from a tensor-returning model: the same training, bit for bit
    ref, _ = _fit(_loader(DictData(X, Y)), _loader(DictData(XV, YV), shuffle=False), loss_fn=_smoothed_ce)
    _assert_trained(learn, init)
    _assert_same_weights(learn, ref)
    assert learn.recorder.losses == ref.recorder.losses
    # the model's own loss, not a plain cross-entropy, and metrics on its logits
    with torch.no_grad():
        logits = learn.model.eval()(XV)["logits"]
    assert learn.recorder.val_losses[-1] == pytest.approx(float(_smoothed_ce(logits, YV)), rel=1e-5)
    assert learn.recorder.val_losses[-1] != pytest.approx(float(F.cross_entropy(logits, YV)), rel=1e-3)
    hand = (logits.argmax(1) == YV).float().mean().item()
    assert learn.recorder.metrics["accuracy"][-1] == pytest.approx(hand, abs=1e-6)
    assert hand > 0.5  # it learnt (chance is 1/3)


def test_loss_fn_none_without_a_model_loss_says_so():
    learn = oc.Learner(Net("dict"), _loader(DictData(X, Y)), loss_fn=None, device="cpu", quiet=True)
    with pytest.raises(ValueError, match="no loss for this batch"):  # the labels went in, no .loss came out
        learn.fit_one_cycle(1, 0.05)


# ---- predict ----------------------------------------------------------------------------------
class Stochastic(nn.Module):
    """Dropout and BatchNorm: predictions depend on the mode. ``out="pair"`` returns two values."""

    def __init__(self, out="tensor"):
        super().__init__()
        self.out = out
        self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3))

    def forward(self, x):
        p = self.net(x)
        return {"a": p, "b": p.sum(-1)} if self.out == "pair" else p


def _predict_learner(model):
    torch.manual_seed(0)
    learn = oc.Learner(model, _loader(TensorDataset(X, Y)), device="cpu", quiet=True)
    with torch.no_grad():
        model.train()(X * 3 + 1)  # running statistics away from their initial values
    model.net[1].eval()  # one submodule in another mode than its parent: both restored
    with torch.no_grad():
        expected = model.eval()(XV)
    model.train()
    model.net[1].eval()
    return learn, expected


def _assert_modes_restored(model):
    assert model.training and model.net[0].training and model.net[2].training and not model.net[1].training


@pytest.mark.parametrize("dl", [
    DataLoader(TensorDataset(XV), batch_size=10),  # 1-tuples (TensorDataset of inputs only)
    DataLoader(XV, batch_size=10),  # bare tensors
], ids=["one-tuples", "bare-tensors"])
def test_predict_on_input_only_batches(dl):
    learn, expected = _predict_learner(Stochastic())
    preds = learn.predict(dl)
    _assert_modes_restored(learn.model)
    assert preds.shape == (32, 3)
    torch.testing.assert_close(preds, expected)
    preds2, targets = learn.predict(dl, with_targets=True)
    assert targets is None and torch.equal(preds2, preds)


@pytest.mark.parametrize("metrics", [[], [oc.metrics.accuracy]])
def test_validation_on_batches_without_targets_is_refused_not_read_as_nan(metrics):
    """A validation loss of no target read NaN (and a metric failed deep inside): named instead."""
    learn = oc.Learner(Stochastic(), _loader(TensorDataset(X, Y)), device="cpu", quiet=True, metrics=metrics)
    with pytest.raises(ValueError, match="validation needs a target in every batch .* predict\\(\\) takes"):
        learn.validate(DataLoader(TensorDataset(XV), batch_size=10))
    learn.valid_dl = DataLoader(TensorDataset(XV), batch_size=10)
    with pytest.raises(ValueError, match="validation needs a target"):
        learn.fit(0.01, 1)


def test_predict_with_targets_on_labelled_batches():
    learn, expected = _predict_learner(Stochastic())
    for dl in (DataLoader(TensorDataset(XV, YV), batch_size=10), DataLoader(DictData(XV, YV, "y"), batch_size=10)):
        preds, targets = learn.predict(dl, with_targets=True)
        torch.testing.assert_close(preds, expected)
        assert torch.equal(targets, YV)
        _assert_modes_restored(learn.model)


def test_predict_returns_ids_as_targets_without_calling_loss_fn():
    """A test set of (inputs, id) pairs: predict needs no loss, and the ids come back in order (a
    last batch shorter than the others included)."""
    class WithIds(Dataset):
        def __len__(self):
            return len(XV)

        def __getitem__(self, i):
            return XV[i], f"id{i}"

    learn, expected = _predict_learner(Stochastic())
    preds, ids = learn.predict(DataLoader(WithIds(), batch_size=10), with_targets=True)
    torch.testing.assert_close(preds, expected)
    assert ids == [f"id{i}" for i in range(len(XV))]
    _assert_modes_restored(learn.model)


def test_predict_dict_outputs_give_dicts_of_stacked_tensors():
    learn, expected = _predict_learner(Stochastic("pair"))
    preds = learn.predict(DataLoader(TensorDataset(XV), batch_size=10))
    _assert_modes_restored(learn.model)
    assert set(preds) == {"a", "b"} and preds["a"].shape == (32, 3) and preds["b"].shape == (32,)
    torch.testing.assert_close(preds["a"], expected["a"])
    torch.testing.assert_close(preds["b"], expected["b"])


def test_predict_model_own_loss_gives_logits_and_labels():
    learn, _ = _fit(_loader(DictData(X, Y)), out="own", loss_fn=None, epochs=1)
    preds, targets = learn.predict(_loader(DictData(XV, YV), shuffle=False), with_targets=True)
    with torch.no_grad():
        expected = learn.model.eval()(XV)["logits"]
    torch.testing.assert_close(preds, expected)
    assert torch.equal(targets, YV)


# ---- a Hugging Face model, from a DataLoader of dicts -----------------------------------------
class TokenData(Dataset):
    """Random token sequences with padding; the label is the first token mod 3."""

    def __init__(self, n, seed, length=12):
        g = torch.Generator().manual_seed(seed)
        lens = torch.randint(6, length + 1, (n,), generator=g)
        self.mask = (torch.arange(length) < lens[:, None]).long()
        self.ids = torch.randint(1, 100, (n, length), generator=g) * self.mask
        self.labels = self.ids[:, 0] % 3

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i]}


@pytest.fixture(scope="module")
def hf():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32, num_labels=3)

    def learner(loss_fn=None):
        torch.manual_seed(0)
        model = transformers.BertForSequenceClassification(config)
        train = DataLoader(TokenData(192, 0), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
        valid = DataLoader(TokenData(64, 1), batch_size=32)
        return oc.Learner(model, train, valid, loss_fn=loss_fn, opt="adamw", metrics=[oc.metrics.accuracy],
                          device="cpu", quiet=True)
    return learner


def test_hugging_face_model_trains_from_dict_batches(hf):
    learn = hf()
    before = learn.validate()
    learn.fit_one_cycle(2, 1e-2)
    rec = learn.recorder
    assert len(rec.val_losses) == 2 and len(rec.metrics["accuracy"]) == 2 and len(rec.losses) == 2 * 12
    assert rec.val_losses[-1] < before["val_loss"] - 0.2
    assert rec.metrics["accuracy"][-1] > before["accuracy"] + 0.2
    preds, targets = learn.predict(with_targets=True)
    assert preds.shape == (64, 3) and torch.equal(targets, learn.valid_dl.dataset.labels)
    assert (preds.argmax(1) == targets).float().mean().item() == pytest.approx(rec.metrics["accuracy"][-1])


def test_hugging_face_lr_find_restores_weights(hf):
    learn = hf()
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    res = learn.lr_find(num_it=20, end_lr=0.1)  # to 0.1: the loss has not diverged yet (no early stop)
    assert len(res.lrs) == len(res.losses) == len(res.val_losses) == len(res.metrics["accuracy"]) == 20
    assert all(torch.isfinite(torch.tensor(res.val_losses)))
    after = learn.model.state_dict()
    assert after.keys() == before.keys()
    for k in before:
        assert torch.equal(after[k], before[k]), k


def test_hugging_face_loss_fn_given_matches_its_own_loss(hf):
    own = hf(loss_fn=None)  # labels go to the model, which returns its cross-entropy
    own.fit_one_cycle(1, 1e-2)
    given = hf(loss_fn=F.cross_entropy)  # labels popped from the batch; loss_fn on the logits
    given.fit_one_cycle(1, 1e-2)  # the same global RNG as own's fit (dropout): hf() seeds it
    init = hf().model.state_dict()
    a, b = own.model.state_dict(), given.model.state_dict()
    assert not torch.equal(a["classifier.weight"], init["classifier.weight"])
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    assert own.recorder.losses == pytest.approx(given.recorder.losses, rel=1e-5)


# ---- numpy batches ---------------------------------------------------------------------------------
def test_numpy_arrays_become_tensors_as_default_convert_makes_them():
    import numpy as np
    from torch.utils.data import default_convert
    batch = (np.arange(6, dtype=np.float32).reshape(2, 3), {"mask": np.array([True, False])}, np.int64(3),
             np.array(["a", "b"]), 2.5)
    moved = to_device(batch, torch.device("cpu"))
    want = default_convert(batch)  # torch's own rule for a batch handed over as it is
    assert torch.equal(moved[0], want[0]) and moved[0].dtype == torch.float32
    assert torch.equal(moved[1]["mask"], want[1]["mask"]) and moved[1]["mask"].dtype == torch.bool
    assert torch.equal(moved[2], want[2]) and moved[2].dtype == torch.int64
    assert isinstance(moved[3], np.ndarray) and moved[4] == 2.5  # strings and plain numbers are left alone


def test_a_list_of_numpy_batches_trains_as_the_same_tensors_do():
    import numpy as np
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 4, generator=g), torch.randint(0, 2, (32,), generator=g)
    arrays = [(x[i:i + 8].numpy(), y[i:i + 8].numpy()) for i in range(0, 32, 8)]  # what a user's own pipeline yields
    tensors = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 32, 8)]
    assert isinstance(arrays[0][0], np.ndarray)

    def run(dl):
        torch.manual_seed(0)
        learn = oc.Learner(nn.Linear(4, 2), dl, dl, metrics=[accuracy], device="cpu", quiet=True)
        learn.fit_one_cycle(2, 0.1)
        return learn

    a, b = run(arrays), run(tensors)
    assert a.recorder.losses == b.recorder.losses and a.recorder.metrics == b.recorder.metrics
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    preds = a.predict(arrays)
    assert torch.equal(preds, b.predict(tensors))
