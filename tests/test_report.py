"""report.html and the terminal's last words: one self-contained page (no external URL, every image
embedded), a card whose values are result.json's, epochs numbered from 1 as in epochs.csv, the
compare table's peak LR as a geometric mean, ``plot A B`` warning about different tasks, the
compare's live status line. One short digits run (in-process) serves most tests."""

import csv
import io
import json
import math
import re
import shlex
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from onecycle.cli import _given, _layers, build_parser, main
from onecycle.compare import Cell, LiveStatus
from onecycle.compare_report import compare_outputs
from onecycle.compare_table import compare_rows, geo_mean
from onecycle.recorder import Recorder
from onecycle.runconfig import FitConfig, make_config


class _Html(HTMLParser):
    """Every tag's attributes, the card's facts (data-key -> (data-value, text)) and the tables."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.facts: dict[str, tuple[object, str]] = {}
        self.tables: list[list[list[str]]] = []
        self._fact: list | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if "data-key" in attrs:
            self._fact = [attrs["data-key"], json.loads(attrs["data-value"]), ""]
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if self._fact is not None and tag in ("span", "b", "pre"):
            key, value, text = self._fact
            self.facts[key] = (value, text)
            self._fact = None
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._fact is not None:
            self._fact[2] += data
        if self._cell is not None:
            self._cell.append(data)


def _parse(path: Path) -> _Html:
    parser = _Html()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def _only_folder(parent: Path) -> Path:
    (folder,) = [p for p in parent.iterdir() if p.is_dir()]
    return folder


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    import contextlib
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["fit", "--task", "digits", "--epochs", "3", "--opt", "adamw", "--num-it", "60",
                     "--out", str(out)]) == 0
    folder = _only_folder(out)
    return folder, json.loads((folder / "result.json").read_text()), buf.getvalue()


def _assert_self_contained(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"https?://", text), "an external URL"
    assert "url(" not in text and "@import" not in text  # CSS fetches nothing either
    page = _parse(path)
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe", "object", "embed")]
    for tag, attrs in page.tags:
        for key in ("src", "href"):
            if key in attrs:
                assert not attrs[key].startswith("//"), attrs[key]
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,")  # embedded, not a file beside it
        if tag == "a":  # links go to files of the same folder tree (a compare's runs), never out
            assert not re.match(r"^[a-z]+:", attrs["href"]) and not attrs["href"].startswith("/")


def test_run_report_is_one_file_with_every_image_embedded(digits_run):
    folder, _, _ = digits_run
    _assert_self_contained(folder / "report.html")
    imgs = [a["src"] for t, a in _parse(folder / "report.html").tags if t == "img"]
    assert len(imgs) == len(list(folder.glob("*.png"))) == 2  # the dashboard and the finder's plot


def test_a_finished_run_folder_holds_no_stray_file(digits_run):
    folder, _, _ = digits_run
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "dashboard.png", "epochs.csv", "history.json", "iterations.csv", "last.ckpt", "lr_find.json",
        "lr_find.png", "model.pt", "report.html", "result.json"]  # no .lock: the lock was on the folder itself


def test_card_names_the_parts_of_its_time_split_and_the_1cycle_range(digits_run):
    folder, result, _ = digits_run
    text = (folder / "report.html").read_text()
    for part in ("finder: the LR range test.", "training: the training batches",
                 "other: the rest of the wall time: starting Python and importing torch, loading the data"):
        assert part in text
    facts = _parse(folder / "report.html").facts
    low, peak = result["one_cycle"]
    assert peak == result["lr"] and low == pytest.approx(result["lr"] / 25)  # the fit's div
    assert facts["one_cycle"] == ([low, peak], f"{low:.3g} up to {peak:.3g}")


def test_card_shows_result_json(digits_run):
    folder, result, _ = digits_run
    facts = _parse(folder / "report.html").facts
    for key in ("task", "model", "n_params", "opt", "schedule", "lr", "lr_source", "best.accuracy",
                "best_epoch.accuracy", "final.accuracy", "epochs_done", "time.total", "time.finder",
                "time.training", "time.validation", "time.plotting", "time.other", "command"):
        value = result
        for part in key.split("."):
            value = value[part]
        assert facts[key][0] == value, key  # the card carries result.json's exact value
    # ... shown as the report promises: accuracy in %, 2 decimals; LR 3 significant digits; times in s
    assert facts["best.accuracy"][1] == f"{100 * result['best']['accuracy']:.2f}%"
    assert facts["lr"][1] == f"{result['lr']:.3g}" and facts["n_params"][1] == f"{result['n_params']:,}"
    assert all(facts[f"time.{k}"][1].endswith(" s") for k in result["time"])
    # and result.json's values are the run's: against the files written beside it
    weights = torch.load(folder / "model.pt", weights_only=True)  # a plain state_dict
    assert result["n_params"] == sum(t.numel() for t in weights.values())
    assert result["task"] == "digits" and result["model"] == "mlp" and result["opt"] == "adamw"
    lr_find = json.loads((folder / "lr_find.json").read_text())
    assert result["lr"] == lr_find["suggestion"] and result["lr_source"].endswith(f"({lr_find['rule']})")
    rows = list(csv.DictReader((folder / "epochs.csv").open()))
    acc = [float(r["accuracy (%)"]) / 100 for r in rows]  # the CSV in percent, as the report shows it
    assert result["best"]["accuracy"] == pytest.approx(max(acc), rel=1e-12)
    assert result["best_epoch"]["accuracy"] == int(rows[acc.index(max(acc))]["epoch"])
    assert result["final"]["accuracy"] == pytest.approx(acc[-1], rel=1e-12) and result["epochs_done"] == 3
    assert int(rows[-1]["epoch"]) == 3
    split = result["time"]
    assert split["finder"] > 0 and split["training"] > 0 and split["validation"] > 0 and split["plotting"] > 0
    parts = sum(v for k, v in split.items() if k != "total")
    assert math.isclose(parts, split["total"], abs_tol=1e-3)
    assert split["training"] + split["validation"] <= sum(float(r["time (s)"]) for r in rows) + 1e-3


def test_reproduce_command_gives_the_same_config(digits_run):
    folder, result, _ = digits_run
    argv = shlex.split(result["command"])
    assert argv[:2] == ["onecycle", "fit"]
    args = build_parser().parse_args(argv[1:])
    again = make_config(FitConfig, _layers(args, FitConfig))
    ran = json.loads((folder / "config.json").read_text())["config"]
    skip = {"out", "name", "run_dir", "quiet"}
    assert {k: v for k, v in vars(again).items() if k not in skip} == {k: v for k, v in ran.items() if k not in skip}
    assert _given(args, FitConfig) == {"task": "digits", "epochs": 3, "opt": "adamw", "num_it": 60}


def test_report_epochs_start_at_1_and_agree_with_epochs_csv(digits_run):
    folder, _, _ = digits_run
    tables = _parse(folder / "report.html").tables
    (table,) = [t for t in tables if t[0][:2] == ["epoch", "train_loss"]]
    rows = list(csv.DictReader((folder / "epochs.csv").open()))
    assert [r[0] for r in table[1:]] == [r["epoch"] for r in rows] == ["1", "2", "3"]
    col = table[0].index
    for shown, r in zip(table[1:], rows):  # per-column formats: loss 4 decimals, accuracy %, time in s
        assert shown[col("train_loss")] == f"{float(r['train_loss']):.4f}"
        assert shown[col("accuracy")] == f"{float(r['accuracy (%)']):.2f}%"
        assert shown[col("time")] == f"{float(r['time (s)']):.2f} s"


def test_terminal_ends_with_a_summary_and_the_report(digits_run):
    folder, result, out = digits_run
    *_, metric, timing, report, last = out.splitlines()
    best, epoch = result["best"]["accuracy"], result["best_epoch"]["accuracy"]
    assert metric.startswith(f"accuracy: best {100 * best:.2f}% (epoch {epoch}), "
                             f"final {100 * result['final']['accuracy']:.2f}% (epoch 3)")
    assert timing.startswith("finished in ") and "finder " in timing and "training " in timing
    assert report == f"report: {folder / 'report.html'}" and last == f"run folder: {folder}"


# ---- compare -----------------------------------------------------------------------------------------
def _fake_compare(folder: Path, lrs: dict[str, list[float]]) -> dict:
    """A compare folder whose cells finished with the given LRs (no training: result.json only)."""
    results, i = [], 0
    for opt, values in lrs.items():
        for seed, lr in enumerate(values):
            cell = folder / f"{i:03d}-opt={opt}-seed={seed}"
            cell.mkdir(parents=True)
            res = {"status": "finished", "lr": lr, "epochs": 2, "epochs_done": 2, "seconds": 1.5,
                   "final": {"val_loss": 0.5 - 0.01 * seed, "accuracy": 0.9 + 0.01 * seed}}
            (cell / "result.json").write_text(json.dumps(res))
            results.append({"index": i, "label": {"opt": opt, "seed": seed}, "folder": str(cell), **res})
            i += 1
    data = {"config": {}, "metric": "accuracy", "target": None, "results": results}
    (folder / "compare.json").write_text(json.dumps(data))
    return data


def test_compare_peak_lr_is_the_geometric_mean_with_its_range(tmp_path):
    data = _fake_compare(tmp_path, {"sgd": [1e-3, 1e-2, 1e-1], "adamw": [0.02, 0.08]})
    assert math.isclose(geo_mean([1e-3, 1e-2, 1e-1]), 1e-2) and math.isclose(geo_mean([0.02, 0.08]), 0.04)
    header, rows, _ = compare_rows(data, tmp_path)
    col = header.index("peak LR (geo. mean, range)")
    # hand-computed: (1e-3 * 1e-2 * 1e-1) ** (1/3) = 1e-2 (the arithmetic mean, 0.037, no seed used)
    assert [r[col] for r in rows] == ["0.01 (0.001 to 0.1)", "0.04 (0.02 to 0.08)"]
    assert [r[header.index("per seed")] for r in rows] == [  # each value named by its seed, with its LR
        "seed 0: 90.00% (LR 0.001), seed 1: 91.00% (LR 0.01), seed 2: 92.00% (LR 0.1)",
        "seed 0: 90.00% (LR 0.02), seed 1: 91.00% (LR 0.08)"]
    assert "failures" not in header  # none failed: no column of dashes
    compare_outputs(tmp_path)
    _assert_self_contained(tmp_path / "report.html")
    page = _parse(tmp_path / "report.html")
    assert [r[col] for r in page.tables[0][1:]] == ["0.01 (0.001 to 0.1)", "0.04 (0.02 to 0.08)"]
    assert (tmp_path / "seeds.png").is_file()  # the per-seed dots
    links = [a["href"] for t, a in page.tags if t == "a"]
    assert links == []  # the fake cells wrote no report.html: nothing to link
    # the card: the best configuration (the higher mean accuracy: sgd's 91% against adamw's 90.5%) and its score
    assert page.facts["best.config"] == ("opt=sgd", "opt=sgd") and page.facts["best.mean"][1] == "91.00 ± 1.00%"
    assert page.facts["seeds"][0] == [0, 1, 2]
    # the terminal table: within 80 columns, each seed on the line below its configuration
    text = (tmp_path / "summary.txt").read_text().splitlines()
    assert max(map(len, text)) <= 80 and text[0].split()[:3] == ["configuration", "ok", "accuracy"]
    assert text[2].split()[:5] == ["opt=sgd", "3/3", "91.00", "±", "1.00%"]
    assert text[3].strip() == "seed 0: 90.00% (LR 0.001)   seed 1: 91.00% (LR 0.01)"  # whole seeds a line
    assert text[4].strip() == "seed 2: 92.00% (LR 0.1)" and text[5].startswith("opt=adamw")
    # summary.csv: numbers, the units in the header
    head, *body = list(csv.reader((tmp_path / "summary.csv").open()))
    assert head[:7] == ["configuration", "runs", "runs ok", "final accuracy mean (%)", "final accuracy sd (%)",
                        "final val_loss mean", "final val_loss sd"]
    assert [float(v) for v in body[0][3:5]] == pytest.approx([91.0, 1.0]) and float(body[1][5]) == pytest.approx(0.495)
    assert [float(body[0][head.index(f"final accuracy seed {s} (%)")]) for s in range(3)] == pytest.approx([90, 91, 92])
    assert body[1][head.index("final accuracy seed 2 (%)")] == ""  # adamw ran two seeds
    assert float(body[0][head.index("peak LR geometric mean")]) == pytest.approx(0.01)


def test_the_terminal_table_wraps_long_configurations_within_80_columns():
    from onecycle.compare_table import text_table
    rows = [["opt=sgd model_opts={'channels': 25, 'depth': 4} wd=0.1 schedule=cos", "3/3", "94.31 ± 0.59%",
             "0.1890 ± 0.0111", "11.9 s", "0.211"]]
    text = text_table(["configuration", "ok", "accuracy", "val_loss", "time/run", "peak LR"], rows,
                      [["seed 0: 94.72% (LR 0.211)"] * 5])
    assert max(map(len, text.splitlines())) <= 80 and "94.31 ± 0.59%" in text.splitlines()[2]
    assert "opt=sgd" in text and "schedule=cos" in text  # wrapped, not cut


def _fake_run(folder: Path, task: str, opt: str, lr: float) -> Path:
    folder.mkdir(parents=True)
    rec = Recorder(["accuracy"])
    rec.add_iterations([[lr]], [0.9], [1.0])
    rec.add_epoch(1.0, {"val_loss": 0.8, "accuracy": 0.7}, 0.1)
    rec.save_json(folder / "history.json")
    (folder / "config.json").write_text(json.dumps({"command": "fit", "config": {"task": task, "opt": opt},
                                                    "resolved": {"lr": lr}}))
    return folder


def test_plot_of_runs_of_different_tasks_warns_and_names_them(tmp_path, capsys):
    a = _fake_run(tmp_path / "a", "digits", "sgd", 0.1)
    b = _fake_run(tmp_path / "b", "mnist1d", "adamw", 0.003)
    assert main(["plot", str(a), str(b), "--out", str(tmp_path / "plots")]) == 0
    out, err = capsys.readouterr()
    assert f"{a}: task digits, optimizer sgd, peak LR 0.1" in out
    assert f"{b}: task mnist1d, optimizer adamw, peak LR 0.003" in out
    assert "warning: these runs are of different tasks (digits, mnist1d)" in err
    report = _only_folder(tmp_path / "plots") / "report.html"
    assert "Warning: these runs are of different tasks" in report.read_text()
    c = _fake_run(tmp_path / "c", "digits", "adamw", 0.01)
    assert main(["plot", str(a), str(c), "--out", str(tmp_path / "plots2")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_compare_status_line_counts_cells_and_reads_their_epochs(tmp_path):
    cells = []
    for i, opt in enumerate(["sgd", "adamw", "lamb"]):
        cfg = make_config(FitConfig, [("t", {"task": "digits", "opt": opt, "epochs": 3, "lr": "0.1",
                                             "run_dir": str(tmp_path / str(i))})])
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "config.json").write_text("{}")  # started (before it: "starting")
        cells.append(Cell(i, {"opt": opt}, cfg))
    stream = io.StringIO()
    status = LiveStatus(cells, jobs=2, stream=stream)
    status.tick([0, 1])
    (tmp_path / "0" / "epochs.csv").write_text("epoch,train_loss\n1,0.5\n")  # cell 0 finished its epoch 1
    status.tick([0, 1])
    status.tick([0, 1])  # nothing changed: no new line in a log
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert "0/3 done, 2 running, 1 queued, ETA ? | opt=sgd: epoch 1/3; opt=adamw: epoch 1/3" in lines[0]
    assert lines[1].endswith(" | opt=sgd: epoch 2/3; opt=adamw: epoch 1/3") and ", ETA ? |" not in lines[1]
    status.cell_done(cells[0], {"wall_seconds": 3.0}, "[1/3] opt=sgd: finished")
    status.tick([1, 2])
    assert stream.getvalue().splitlines()[-1].split("] ", 1)[1].startswith(
        "1/3 done, 2 running, 0 queued, ETA ")
    assert stream.getvalue().splitlines()[-1].endswith(" | opt=adamw: epoch 1/3; opt=lamb: epoch 1/3")


@pytest.mark.parametrize("command, layer", [
    ("fit", {"task": "mnist1d", "model": "resnet1d", "model_opts": {"width": 8}, "moms": [], "grad_stats": True,
             "lr": "0.001:0.01", "wd": 0.05, "schedule": "step", "milestones": [0.3, 0.9], "rule": "val_min"}),
    ("fit", {"task": "digits", "threads": 0, "batch_size": 32, "task_opts": {"name": "a b"}}),  # not the task threads
    ("demo", {"epochs": 2, "opt": "sgd"}),
    ("find", {"task": "charlm", "clip": 0.0, "num_it": 50}),  # clip 0: not the task's 0.25
])
def test_reproduce_command_round_trips(command, layer):
    from onecycle.runconfig import FindConfig
    from onecycle.rundir import reproduce_command
    cls = FindConfig if command == "find" else FitConfig
    base = [("demo", {"task": "mnist1d", "name": "demo"})] if command == "demo" else []
    cfg = make_config(cls, [*base, ("test", layer)])
    argv = shlex.split(reproduce_command(command, cfg))
    args = build_parser().parse_args(argv[1:])
    again = make_config(cls, _layers(args, cls, base[0][1] if base else None))
    assert argv[:2] == ["onecycle", command] and again == cfg
    assert "--out" not in argv and "--name" not in argv
