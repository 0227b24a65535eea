"""Tests for onecycle.atomic: the one home of atomic writes (temp file beside the target, fsync,
rename, folder fsync; the old file or the new one, never half of one)."""

from __future__ import annotations

import errno
import os

import pytest

from onecycle import atomic
from onecycle.atomic import fsync_dir


def atomic_file_at(folder):
    path = folder / "f.bin"
    atomic.atomic_write_bytes(path, b"x")
    return path


def test_fsync_dir(tmp_path):
    fsync_dir(tmp_path)
    fsync_dir(str(tmp_path))
    with pytest.raises(ValueError, match="existing directory"):
        fsync_dir(atomic_file_at(tmp_path))
    with pytest.raises(TypeError, match="path must be"):
        fsync_dir(3.5)


def test_atomic_write_bytes_content_folders_and_modes(tmp_path):
    path = tmp_path / "a" / "b" / "f.bin"
    atomic.atomic_write_bytes(path, b"\x00one\xff")
    assert path.read_bytes() == b"\x00one\xff"
    old = os.umask(0o027)
    try:
        atomic.atomic_write_bytes(tmp_path / "a" / "new.bin", b"x")
        new_text = tmp_path / "a" / "new.txt"
        atomic.atomic_write_text(str(new_text), "t")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a" / "new.bin").st_mode & 0o777 == 0o640
    assert os.stat(new_text).st_mode & 0o777 == 0o640
    os.chmod(path, 0o604)
    atomic.atomic_write_bytes(str(path), b"second")  # the folder exists now
    assert path.read_bytes() == b"second"
    assert os.stat(path).st_mode & 0o777 == 0o604
    atomic.atomic_write_bytes(path, b"third", mode=0o600)
    assert path.read_bytes() == b"third"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert sorted(os.listdir(tmp_path / "a")) == ["b", "new.bin", "new.txt"]
    assert os.listdir(tmp_path / "a" / "b") == ["f.bin"]
    with pytest.raises(ValueError, match="is a directory"):
        atomic.atomic_write_bytes(tmp_path / "a", b"x")


def test_atomic_write_text_is_utf8_and_keeps_the_old_mode(tmp_path):
    path = tmp_path / "sub" / "t.txt"
    text = "naïve – ∑ 🚀\nline two\n"
    atomic.atomic_write_text(path, text)
    assert path.read_bytes() == text.encode("utf-8")
    os.chmod(path, 0o640)
    atomic.atomic_write_text(path, "é")
    assert path.read_bytes() == b"\xc3\xa9"
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert os.listdir(path.parent) == ["t.txt"]


def test_atomic_write_leaves_no_temp_file_and_the_old_file_after_an_error(tmp_path, monkeypatch):
    path = tmp_path / "f.txt"
    atomic.atomic_write_text(path, "old")

    def fail(src, dst):
        raise OSError(errno.EIO, "replace failed")

    monkeypatch.setattr(atomic.os, "replace", fail)
    with pytest.raises(OSError, match="replace failed"):
        atomic.atomic_write_bytes(path, b"new")
    with pytest.raises(OSError, match="replace failed"):
        atomic.atomic_write_text(path, "new")
    assert os.listdir(tmp_path) == ["f.txt"]
    assert path.read_bytes() == b"old"


def test_atomic_write_temp_file_sits_beside_the_target_and_a_vanished_one_is_fine(tmp_path, monkeypatch):
    path = tmp_path / "data.bin"
    real_replace = os.replace
    seen = []

    def spy(src, dst):
        seen.append(src)
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", spy)
    atomic.atomic_write_bytes(path, b"abc")
    (tmp,) = seen
    assert os.path.dirname(tmp) == str(tmp_path)
    name = os.path.basename(tmp)
    assert name.startswith(".data.bin.") and name.endswith(".tmp") and len(name) > len(".data.bin..tmp")

    def replace_then_fail(src, dst):  # the temp file is gone when the cleanup runs
        real_replace(src, dst)
        raise OSError(errno.EIO, "late failure")

    monkeypatch.setattr(atomic.os, "replace", replace_then_fail)
    with pytest.raises(OSError, match="late failure"):
        atomic.atomic_write_bytes(path, b"new")
    assert os.listdir(tmp_path) == ["data.bin"]
