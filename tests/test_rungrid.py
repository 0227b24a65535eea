"""rungrid.py: a compare's cells; a schedule-free optimizer's cells of schedules other than const are
mapped to const, run once and said so; the whole grid runs through ``onecycle compare``."""

import json
import sys
from pathlib import Path

import pytest

from onecycle.cli import main
from onecycle.rungrid import expand_grid

sys.path.insert(0, str(Path(__file__).parent))
from test_cli import _env, _only_folder  # noqa: E402

pytest.importorskip("schedulefree")
pytest.importorskip("prodigyopt")


def test_schedule_free_cells_are_mapped_to_const_once_and_said_so():
    notes = []
    cells = expand_grid([("command line", {"task": "digits", "lr": "0.1"})],
                        {"schedule": ["cos", "clr_beta", "wsd", "const"],
                         "opt": ["sgd", "adamw", "sfree_sgd", "sfree_adamw", "prodigy"], "seed": [0, 1]}, notes=notes)
    labels = [(label["schedule"], label["opt"], label["seed"]) for label, _ in cells]
    scheduled = [(s, o, seed) for s in ("cos", "clr_beta", "wsd", "const") for o in ("sgd", "adamw", "prodigy")
                 for seed in (0, 1)]
    free = [("const", o, seed) for o in ("sfree_sgd", "sfree_adamw") for seed in (0, 1)]
    assert sorted(labels) == sorted(scheduled + free) and len(labels) == len(set(labels)) == 28
    # in the grid's order: a schedule-free optimizer appears where its first (mapped) cell came
    assert labels[:6] == [("cos", "sgd", 0), ("cos", "sgd", 1), ("cos", "adamw", 0), ("cos", "adamw", 1),
                          ("const", "sfree_sgd", 0), ("const", "sfree_sgd", 1)]
    for label, cfg in cells:
        assert cfg.schedule == label["schedule"] and cfg.opt == label["opt"] and cfg.seed == label["seed"]
    assert notes == ["sfree_sgd is schedule-free: schedule clr_beta, cos, wsd mapped to const (a constant LR after "
                     "a linear warmup over 5% of training), run once",
                     "sfree_adamw is schedule-free: schedule clr_beta, cos, wsd mapped to const (a constant LR after "
                     "a linear warmup over 5% of training), run once"]


def test_a_schedule_and_an_optimizer_from_the_base_layers_are_mapped_too():
    notes = []
    cells = expand_grid([("grid.toml", {"task": "digits", "schedule": "wsd", "warmup_pct": 0.1}),
                         ("command line", {"lr": "0.1"})], {"opt": ["adamw", "sfree_adamw"]}, notes=notes)
    assert [(label, cfg.schedule) for label, cfg in cells] == [({"opt": "adamw"}, "wsd"),
                                                               ({"opt": "sfree_adamw"}, "const")]
    assert notes == ["sfree_adamw is schedule-free: schedule wsd mapped to const (a constant LR after a linear "
                     "warmup over 10% of training), run once"]
    notes = []
    cells = expand_grid([("command line", {"task": "mnist1d", "lr": "0.1"})], {"seed": [0, 1]}, notes=notes)
    assert notes == [] and [cfg.opt for _, cfg in cells] == ["adamw", "adamw"]  # the task's default: no mapping


def test_compare_runs_the_mapped_grid_and_records_the_note(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    assert main(["compare", "--task", "_cli_task:tiny", "--schedule", "wsd", "const", "--opt", "sgd", "sfree_sgd",
                 "--lr", "0.1", "--epochs", "2", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "onecycle compare: sfree_sgd is schedule-free: schedule wsd mapped to const" in out
    folder = _only_folder(tmp_path)
    data = json.loads((folder / "compare.json").read_text())
    assert [r["label"] for r in data["results"]] == [{"schedule": "wsd", "opt": "sgd"},
                                                     {"schedule": "const", "opt": "sfree_sgd"},
                                                     {"schedule": "const", "opt": "sgd"}]
    assert all(r["status"] == "finished" for r in data["results"]) and data["notes"][0].startswith("sfree_sgd is")
    sfree = json.loads((Path(data["results"][1]["folder"]) / "history.json").read_text())
    lrs = sfree["group_lrs"][-1]
    assert lrs[0] == 0.0 and lrs[-1] == pytest.approx(0.1)  # its warmup, then the constant LR
