"""Tests for onecycle.rundir: run folders directly inside ``out`` with unique names, names refused
before anything is made, a run's JSON files read back (None when missing)."""

from __future__ import annotations

import json
import re
import types

import pytest

from onecycle import rundir
from onecycle.runconfig import ConfigError
from onecycle.rundir import read_json, run_folder


def test_run_folders_are_made_directly_inside_out_with_unique_names(tmp_path, monkeypatch):
    out = tmp_path / "deep" / "runs"
    assert re.fullmatch(r"\d{8}-\d{6}-demo", run_folder(str(out), "demo").name)
    frozen = types.SimpleNamespace(strftime=lambda fmt: "20240102-030405")  # three runs in one second
    monkeypatch.setattr(rundir, "time", frozen)
    made = [run_folder(str(out), "demo") for _ in range(3)]
    assert [f.name for f in made] == ["20240102-030405-demo", "20240102-030405-demo-2", "20240102-030405-demo-3"]
    assert all(f.parent == out and f.is_dir() for f in made)


@pytest.mark.parametrize("name", ["x/../../elsewhere", "a/b", "a\\b", "..", ".", "", "nul\0"])
def test_a_name_that_is_not_one_path_component_makes_nothing(tmp_path, name):
    with pytest.raises(ConfigError, match=r"^name must be one path component") as info:
        run_folder(str(tmp_path / "runs"), name)
    assert info.value.key == "name" and repr(name) in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_read_json_is_none_for_a_missing_or_broken_file(tmp_path):
    assert read_json(tmp_path / "absent.json") is None
    (tmp_path / "broken.json").write_text("{not json")
    assert read_json(tmp_path / "broken.json") is None
    (tmp_path / "ok.json").write_text(json.dumps({"status": "finished"}))
    assert read_json(tmp_path / "ok.json") == {"status": "finished"}
