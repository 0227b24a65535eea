"""Tests for onecycle.checks: each check names the argument and the value, a wrong type is a
TypeError and a wrong value a ValueError; paths must name files."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from onecycle.checks import (
    check_bool,
    check_callable,
    check_choice,
    check_device,
    check_file_path,
    check_int,
    check_keywords,
    check_loader,
    check_number,
    check_path,
    check_type,
    is_scalar,
    loader_len,
    per_group,
    warn,
)


@pytest.mark.parametrize("call, error, message", [
    (lambda: check_int("n", 1.0), TypeError, r"^n must be an int, got 1.0$"),
    (lambda: check_int("n", True), TypeError, r"^n must be an int, got True$"),
    (lambda: check_int("n", "3", 1), TypeError, r"^n must be an int >= 1, got '3'$"),
    (lambda: check_int("n", 0, 1), ValueError, r"^n must be an int >= 1, got 0$"),
    (lambda: check_int("n", 5, None, 4), ValueError, r"^n must be an int <= 4, got 5$"),
    (lambda: check_int("rank", 3, 0, 2), ValueError, r"^rank must be an int in \[0, 2\], got 3$"),
    (lambda: check_int("rank", -1, 0, 2), ValueError, r"^rank must be an int in \[0, 2\], got -1$"),
    (lambda: check_int("rank", np.int64(1), 0, 2), TypeError, r"^rank must be an int in \[0, 2\], got "),
    (lambda: check_bool("flag", 1), TypeError, r"^flag must be a bool, got 1$"),
    (lambda: check_number("x", "1"), TypeError, r"^x must be a number, got '1'$"),
    (lambda: check_number("x", torch.ones(2)), TypeError, r"^x must be a number"),
    (lambda: check_number("x", float("nan")), ValueError, r"^x must be finite, got nan$"),
    (lambda: check_number("p", 1.0, low=0, high=1, high_open=True), ValueError, r"^p must be < 1, got 1.0$"),
    (lambda: check_path("path", 3), TypeError, r"^path must be a str or os.PathLike, got int: 3$"),
    (lambda: check_path("path", ""), ValueError, r"^path must not be empty, got ''$"),
])
def test_bad_values_are_named_with_the_right_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_good_values_come_back():
    assert check_int("n", 0, 0) == 0 and check_int("rank", 2, 0, 2) == 2 and check_int("n", -5) == -5
    assert check_bool("flag", False) is False
    assert check_number("x", torch.tensor(0.5), low=0, high=1) == 0.5 and check_number("x", np.float32(2)) == 2.0


def test_paths_are_strings_and_files_are_not_folders(tmp_path):
    assert check_path("path", tmp_path) == str(tmp_path)
    assert check_file_path("path", Path(tmp_path / "f.bin")) == str(tmp_path / "f.bin")  # need not exist yet
    with pytest.raises(ValueError, match=r"^path must be a file path, but .* is a directory$"):
        check_file_path("path", tmp_path)
    with pytest.raises(TypeError, match=r"^path must be a str or os.PathLike, got bytes"):
        check_path("path", b"/tmp/x")


# ---- numbers: what counts as one, and both ends of a range -----------------------------------------
def test_is_scalar_is_one_number_not_a_sequence_nor_a_string():
    for one in (3, 2.5, np.float32(1), np.int64(2), torch.tensor(1.0), np.array(2.0)):
        assert is_scalar(one), one
    for many in ("1", "", [1.0], (1.0, 2.0), torch.ones(1), torch.ones(2), np.array([2.0])):
        assert not is_scalar(many), many


def test_check_number_refuses_bools_one_element_sequences_and_what_float_cannot_read():
    """A bool is not a number here, a one-element tensor or array is not one number (float() would
    read both), a complex number is not a real one, and what float() refuses is a TypeError naming
    the value."""
    for bad in (True, False, torch.ones(1), np.array([2.0]), torch.tensor(1j), 1j, np.complex128(1j),
                np.complex64(2), torch.tensor(2 + 0j)):  # float() would drop a numpy complex's imaginary part
        with pytest.raises(TypeError, match=r"^x must be a number, got "):
            check_number("x", bad)

    class IndexOnly:  # float() reads __index__, but a number here has __float__ (the module's contract)
        def __index__(self):
            return 3

    with pytest.raises(TypeError, match=r"^x must be a number, got "):
        check_number("x", IndexOnly())

    class FloatFails:  # has __float__ but float() of it raises: still a TypeError naming the value
        def __float__(self):
            raise ValueError("no")

        def __repr__(self):
            return "FloatFails()"

    with pytest.raises(TypeError, match=r"^x must be a number, got FloatFails\(\)$"):
        check_number("x", FloatFails())


@pytest.mark.parametrize("value, kw, message", [
    (-1, {"low": 0}, r"^x must be >= 0, got -1$"),
    (0, {"low": 0, "low_open": True}, r"^x must be > 0, got 0$"),
    (-0.5, {"low": 0, "low_open": True}, r"^x must be > 0, got -0.5$"),
    (2, {"high": 1}, r"^x must be <= 1, got 2$"),
    (1, {"high": 1, "high_open": True}, r"^x must be < 1, got 1$"),
    (1.5, {"low": 0, "high": 1, "low_open": True, "high_open": True}, r"^x must be < 1, got 1.5$"),
])
def test_check_number_range_ends_named_with_their_bound(value, kw, message):
    with pytest.raises(ValueError, match=message):
        check_number("x", value, **kw)


def test_check_number_range_ends_are_closed_unless_told_and_open_ends_keep_their_inside():
    assert check_number("x", 0, low=0) == 0.0 and check_number("x", 1, high=1) == 1.0
    assert check_number("x", 0, low=0, high=1) == 0.0 and check_number("x", 1, low=0, high=1) == 1.0
    assert check_number("x", 1e-9, low=0, low_open=True) == 1e-9
    assert check_number("x", 0.5, low=0, high=1, low_open=True, high_open=True) == 0.5
    assert check_number("x", 5, low=0, low_open=True, high=None) == 5.0


def test_per_group_one_number_for_all_or_one_per_group():
    assert per_group("wd", 0.1, 3) == [0.1, 0.1, 0.1]
    assert per_group("wd", [0.1, 0.2], 2) == [0.1, 0.2]
    assert per_group("wd", (np.float32(0.5),), 1) == [0.5]
    assert per_group("wd", torch.tensor(0.25), 2) == [0.25, 0.25]  # a 0-d tensor is one number
    with pytest.raises(ValueError, match=r"^wd has 2 values but there are 3 param groups, got \[0.1, 0.2\]$"):
        per_group("wd", [0.1, 0.2], 3)
    with pytest.raises(TypeError, match=r"^wd must be a number or a sequence of numbers \(one per param group\), "
                                        r"got '0.1'$"):
        per_group("wd", "0.1", 1)
    with pytest.raises(TypeError, match=r"^wd must be a number or a sequence of numbers"):
        per_group("wd", b"1", 1)


def test_per_group_names_the_group_whose_value_is_wrong_and_applies_the_limits():
    with pytest.raises(ValueError, match=r"^wd\[1\] must be >= 0, got -0.1$"):
        per_group("wd", [0.1, -0.1], 2, low=0)
    with pytest.raises(ValueError, match=r"^wd must be >= 0, got -0.1$"):  # one number: named as given
        per_group("wd", -0.1, 3, low=0)
    with pytest.raises(ValueError, match=r"^wd must be >= 0, got -0.1$"):  # one group: no index
        per_group("wd", [-0.1], 1, low=0)
    with pytest.raises(TypeError, match=r"^lr\[0\] must be a number, got None$"):
        per_group("lr", [None, 0.1], 2)
    assert per_group("wd", [0, 1], 2, low=0, high=1) == [0.0, 1.0]


# ---- the other checks: the value back when good, the argument and value named when not -------------
def test_check_callable_names_what_it_wants():
    def f():
        pass

    assert check_callable("fn", f) is f and check_callable("fn", None, none_ok=True) is None
    with pytest.raises(TypeError, match=r"^fn must be callable, got None$"):
        check_callable("fn", None)
    with pytest.raises(TypeError, match=r"^fn must be callable, got 3$"):
        check_callable("fn", 3)
    with pytest.raises(TypeError, match=r"^fn must be a function of the batch or None, got 3$"):
        check_callable("fn", 3, "a function of the batch", none_ok=True)


def test_check_choice_compares_by_value_with_bools_apart_from_numbers():
    assert check_choice("amp", "bf16", (False, True, "bf16")) == "bf16"
    assert check_choice("amp", False, (False, True)) is False and check_choice("n", 2, (1, 2)) == 2
    for bad in (1, 0):  # 1 == True, but not a choice of (False, True)
        with pytest.raises(ValueError, match=rf"^amp must be one of False, True, 'bf16', got {bad}$"):
            check_choice("amp", bad, (False, True, "bf16"))
    with pytest.raises(ValueError, match=r"^on_nan must be one of 'raise', 'skip', got 'sk'$"):
        check_choice("on_nan", "sk", ("raise", "skip"))
    # equal, not the same object: a string built at run time, a float parsed (negative control: `is`)
    amps, xs = (False, True, "bf16"), (0.25, 0.5)
    built, parsed = "".join(["bf", "16"]), float("0.5")
    assert built is not amps[2] and parsed is not xs[1]
    assert check_choice("amp", built, amps) is built and check_choice("x", parsed, xs) is parsed


def test_check_device_makes_a_device_and_names_a_bad_one():
    assert check_device("device", None) is None
    assert check_device("device", "cpu") == torch.device("cpu")
    assert check_device("device", torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"^device must be a torch.device or a name such as 'cpu' or 'cuda:0', "
                                         r"got 'gpu0'$"):
        check_device("device", "gpu0")


def test_check_type_names_every_type_allowed_and_the_type_given():
    assert check_type("model", 3, int) == 3
    with pytest.raises(TypeError, match=r"^model must be a Module, got str$"):
        check_type("model", "m", torch.nn.Module)
    with pytest.raises(TypeError, match=r"^x must be a int or float, got str$"):
        check_type("x", "1", (int, float))


def test_check_file_path_names_the_argument_for_a_wrong_type():
    with pytest.raises(TypeError, match=r"^where must be a str or os.PathLike, got int: 3$"):
        check_file_path("where", 3)


def test_check_loader_takes_iterables_of_batches_and_names_what_is_not_one():
    from torch.utils.data import DataLoader, TensorDataset
    ds = TensorDataset(torch.zeros(4, 2))
    check_loader("train_dl", DataLoader(ds, batch_size=2))
    check_loader("train_dl", [(torch.zeros(2), torch.zeros(2))])
    check_loader("train_dl", iter([1]))  # no length: not checked for emptiness
    with pytest.raises(TypeError, match=r"^train_dl is a Tensor of shape \(4, 2\), not a loader: pass a loader of "
                                        r"batches, .* \(or call the model on it\)$"):
        check_loader("train_dl", torch.zeros(4, 2))
    with pytest.raises(TypeError, match=r"^valid_dl is a TensorDataset, a Dataset: pass a loader of batches, "
                                        r"e.g. torch.utils.data.DataLoader\(valid_dl, batch_size=64\)$"):
        check_loader("valid_dl", ds)
    with pytest.raises(TypeError, match=r"^train_dl must be an iterable of batches \(a DataLoader\), got int$"):
        check_loader("train_dl", 3)
    with pytest.raises(ValueError, match=r"^train_dl is empty \(len 0\)$"):
        check_loader("train_dl", [])
    check_loader("train_dl", [0])  # len 1 is not empty


def test_loader_len_is_none_without_a_length():
    assert loader_len([1, 2]) == 2 and loader_len(iter([1, 2])) is None


# ---- check_keywords: a mistyped keyword named where it was passed ----------------------------------
def _inner(x, lr_max=0.1, *, every=1, resume=False):
    pass


def _outer(epochs, lr_max=None, **kw):
    pass


def _outer_base(epochs, base_lr=None, **kw):
    pass


def _chain_end(a, *, last=1):
    pass


def _mistyped(kw, own=_outer, targets=(_inner,), sets=None):
    with pytest.raises(TypeError) as err:
        check_keywords("fit", kw, own, targets, sets)
    return str(err.value)


def test_check_keywords_checks_every_key_after_one_that_passes():
    assert _mistyped({"every": 2, "evry": 2}) == ("fit() got an unexpected keyword argument 'evry'; "
                                                  "did you mean 'every'?")


def test_check_keywords_lets_through_what_a_target_takes():
    check_keywords("fit", {"every": 2, "resume": True}, _outer, [_inner])
    check_keywords("fit", {"every": 2, "last": 3}, _outer, [_inner, _chain_end])  # any target in the chain
    check_keywords("fit", {}, _outer, [_inner], sets={"x": ""})


def test_check_keywords_names_the_closest_name_only_when_one_is_close():
    assert _mistyped({"evry": 2}) == "fit() got an unexpected keyword argument 'evry'; did you mean 'every'?"
    assert _mistyped({"resum": True}) == "fit() got an unexpected keyword argument 'resum'; did you mean 'resume'?"
    assert _mistyped({"lr_mx": 1}) == "fit() got an unexpected keyword argument 'lr_mx'; did you mean 'lr_max'?"
    assert _mistyped({"zzz": 1}) == "fit() got an unexpected keyword argument 'zzz'"
    assert _mistyped({"lst": 1}, targets=[_inner, _chain_end]) == ("fit() got an unexpected keyword argument "
                                                                    "'lst'; did you mean 'last'?")
    # own's parameter passed through **kw again (lr_max reaches _inner from own, never from kw)
    assert _mistyped({"lr_max": 1}, own=_outer, targets=[_inner]) == ("fit() got an unexpected keyword argument "
                                                                       "'lr_max'")
    # a keyword name that own also has and that no close other name matches: no hint naming itself
    assert _mistyped({"epochs": 1}) == "fit() got an unexpected keyword argument 'epochs'"


def test_check_keywords_reads_the_lr_under_another_librarys_name_as_ours():
    for spelling in ("lr", "max_lr", "learning_rate", "peak_lr"):
        assert _mistyped({spelling: 0.1}) == (f"fit() got an unexpected keyword argument {spelling!r}; "
                                              f"did you mean 'lr_max'?")
        assert _mistyped({spelling: 0.1}, own=_outer_base) == (f"fit() got an unexpected keyword argument "
                                                               f"{spelling!r}; did you mean 'base_lr'?")
    assert _mistyped({"max_lr": 0.1}, own=_chain_end, targets=[_chain_end]) == ("fit() got an unexpected keyword "
                                                                                 "argument 'max_lr'")


def test_check_keywords_says_which_keywords_own_sets_itself():
    sets = {"every": "pass it to the checkpointer", "resume": ""}
    assert _mistyped({"every": 2}, sets=sets) == ("fit() got an unexpected keyword argument 'every': fit sets it "
                                                  "itself; pass it to the checkpointer")
    assert _mistyped({"resume": True}, sets=sets) == ("fit() got an unexpected keyword argument 'resume': fit sets "
                                                      "it itself")
    check_keywords("fit", {"resume": True}, _outer, [_inner], None)  # without sets: passed on


def test_check_keywords_trusts_a_target_that_hides_what_it_takes():
    def wrapper(*args, **kw):
        pass

    def takes_rest(a, *rest):
        pass

    check_keywords("fit", {"anything": 1}, _outer, [wrapper])  # **kw at the chain's end
    check_keywords("fit", {"anything": 1}, _outer, [takes_rest, _inner])  # *args anywhere
    with pytest.raises(TypeError, match="'anything'"):  # **kw before the chain's end: the end decides
        check_keywords("fit", {"anything": 1}, _outer, [_outer, _inner])


# ---- warn: the warning points at the user's line ---------------------------------------------------
def test_warn_points_at_the_first_caller_outside_the_package():
    import inspect
    import os

    import onecycle.checks as checks_module
    here = os.path.abspath(__file__)

    # Under mutation testing (mutmut) `warn` is a trampoline defined outside the package, in its clean
    # run too: its frame stands between every caller and the function and is the first caller outside
    # the package then, so the warning must point at it (and not one frame further out, at our line).
    trampoline = warn.__code__.co_filename.endswith(os.path.join("mutmut", "mutation", "trampoline.py"))

    def expected(line: int) -> tuple[str, int | None]:
        return (os.path.abspath(warn.__code__.co_filename), None) if trampoline else (here, line)

    def points_at(record) -> tuple[str, int | None]:
        return os.path.abspath(record.filename), None if trampoline else record.lineno

    with pytest.warns(RuntimeWarning, match="^direct$") as record:
        line = inspect.currentframe().f_lineno + 1
        warn("direct", RuntimeWarning)
    assert points_at(record[0]) == expected(line)
    # a call from inside the package (a function compiled under the package's folder) is skipped over
    inside = os.path.join(os.path.dirname(os.path.abspath(checks_module.__file__)), "_fake_module.py")
    scope = {"warn": warn}
    exec(compile("def deep():\n    warn('nested')\n", inside, "exec"), scope)
    with pytest.warns(UserWarning, match="^nested$") as record:
        line = inspect.currentframe().f_lineno + 1
        scope["deep"]()
    assert points_at(record[0]) == expected(line)


def test_import_extra_returns_the_module_or_names_the_extra(monkeypatch):
    import json

    from onecycle.checks import import_extra, install_hint
    assert import_extra("json", "never", "unused") is json
    assert install_hint("ray") == "pip install 'onecycle[ray]'"
    monkeypatch.setitem(sys.modules, "onecycle_missing_pkg", None)  # an import of it fails
    with pytest.raises(ImportError, match=r"^X needs onecycle_missing_pkg: pip install 'onecycle\[extra\]'$") as info:
        import_extra("onecycle_missing_pkg", "extra", "X needs onecycle_missing_pkg")
    assert isinstance(info.value.__cause__, ImportError)  # the original error is kept
