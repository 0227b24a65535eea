"""Tests for onecycle.checks: each check names the argument and the value, a wrong type is a
TypeError and a wrong value a ValueError; paths must name files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from onecycle.checks import check_bool, check_file_path, check_int, check_number, check_path


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
