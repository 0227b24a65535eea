"""The ``onecycle`` command: demo end to end, compare with a failing cell, config errors naming the
key, user tasks, Ctrl-C then an exact resume, plot, help. Small budgets; subprocesses where the
process boundary is the point (demo, signals, compare's workers)."""

import base64
import json
import os
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

import onecycle.schedules as S
from onecycle.checkpoint import safe_load
from onecycle.cli import main
from onecycle.runconfig import ConfigError, FitConfig, make_config
from onecycle.rundir import RunDir
from onecycle.runs import schedules_for

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
from test_tensorboard import _FakeWriter  # noqa: E402

TINY = ["--task", "_cli_task:tiny", "--lr", "0.1", "--quiet"]


def _env() -> dict:
    """Child processes find the tests' user tasks (``_cli_task``) like pytest does."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onecycle", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env())


def _only_folder(parent: Path) -> Path:
    (folder,) = [p for p in parent.iterdir() if p.is_dir()]
    return folder


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


def _report_pngs(path: Path) -> list[bytes]:
    parser = _Images()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    out = []
    for src in parser.srcs:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix), src[:40]  # embedded: the page needs no other file and no network
        out.append(base64.b64decode(src[len(prefix):], validate=True))
    return out


# ---- demo, end to end ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("demo")
    proc = _cli("demo", "--epochs", "2", "--grad-stats", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return _only_folder(out), proc


def test_demo_prints_finder_table_and_folder(demo_run):
    folder, proc = demo_run
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("LR finder") and any("<- suggestion" in ln for ln in lines)
    assert any(ln.split()[:2] == ["epoch", "train_loss"] for ln in lines)
    rows = [ln.split()[0] for ln in lines if ln.split() and ln.split()[0].isdigit()]
    assert rows == ["1", "2"]  # one row per epoch, from 1
    assert lines[-1] == f"run folder: {folder}"
    assert lines[-2] == f"report: {folder / 'report.html'}" and lines[-3].startswith("finished in ")
    assert lines[-4].startswith("accuracy: best ")  # the summary: best and final metric, where the time went
    assert folder.name.endswith("-demo")


def test_demo_folder_holds_every_promised_file(demo_run):
    folder, _ = demo_run
    promised = ["config.json", "history.json", "epochs.csv", "iterations.csv", "lr_find.json", "last.ckpt",
                "model.pt", "result.json", "report.html", "lr_find.png", "dashboard.png", "grad_stats.png"]
    assert not [f for f in promised if not (folder / f).is_file()]
    meta = json.loads((folder / "config.json").read_text())
    assert meta["config"]["task"] == "mnist1d" and meta["config"]["model"] == "cnn" and meta["config"]["epochs"] == 2
    assert {"onecycle", "torch", "python", "git"} <= set(meta["versions"])
    assert meta["resolved"]["lr"] == meta["resolved"]["lr_find"]["suggestion"] > 0
    result = json.loads((folder / "result.json").read_text())
    assert result["status"] == "finished" and result["epochs_done"] == 2 and 0 < result["final"]["accuracy"] <= 1


def test_demo_report_embeds_every_plot(demo_run):
    folder, _ = demo_run
    pngs = _report_pngs(folder / "report.html")
    assert len(pngs) == len(list(folder.glob("*.png"))) == 3  # the dashboard, the finder, gradient statistics
    assert all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    assert "val_min" in (folder / "report.html").read_text()  # the finder's suggestions table


def test_plot_redraws_one_run_and_overlays_several(demo_run, tmp_path, capsys):
    folder, _ = demo_run
    (folder / "dashboard.png").unlink()
    assert main(["plot", str(folder)]) == 0
    assert (folder / "dashboard.png").is_file()
    assert main(["fit", *TINY, "--epochs", "2", "--out", str(tmp_path / "runs"), "--name", "a"]) == 0
    other = _only_folder(tmp_path / "runs")
    capsys.readouterr()
    assert main(["plot", str(folder), str(other), "--out", str(tmp_path / "plots")]) == 0
    overlay = _only_folder(tmp_path / "plots")
    assert (overlay / "overlay.png").is_file() and len(_report_pngs(overlay / "report.html")) == 1
    assert main(["plot", str(tmp_path)]) == 2
    assert "not a run or compare folder" in capsys.readouterr().err


def test_find_prints_every_suggestion_and_writes_the_plot(tmp_path, capsys):
    from onecycle.lr_finder import SUGGESTERS
    assert main(["find", "--task", "_cli_task:tiny", "--num-it", "40", "--end-lr", "3", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert all(f"  {rule} " in out for rule in SUGGESTERS) and "<- suggestion" in out
    folder = _only_folder(tmp_path)
    assert json.loads((folder / "result.json").read_text())["suggestion"] > 0
    assert (folder / "lr_find.png").is_file() and len(_report_pngs(folder / "report.html")) == 1


# ---- compare -------------------------------------------------------------------------------------
def test_compare_grid_reports_a_failing_run_and_finishes_the_rest(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    grid = tmp_path / "grid.toml"
    grid.write_text('lr = 0.1\nepochs = 2\njobs = 2\ntarget = 0.5\n'
                    '[grid]\ntask = ["_cli_task:tiny", "_cli_task:broken"]\nopt = ["sgd", "adamw"]\n')
    assert main(["compare", "--grid", str(grid), "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    folder = _only_folder(tmp_path)
    lines = out.splitlines()
    table = (folder / "summary.txt").read_text().splitlines()
    assert out.startswith("\n".join(table)) and max(map(len, table)) <= 80  # 80 columns: configurations wrap
    rows = {ln.split()[0] + " " + lines[k + 1]: k for k, ln in enumerate(lines) if ln.startswith("task=")}
    assert len(rows) == 4
    for opt in ("sgd", "adamw"):
        assert " 1/1 " in lines[rows[f"task=_cli_task:tiny opt={opt}"]]
        assert " 0/1 " in lines[rows[f"task=_cli_task:broken opt={opt}"]]
        below = lines[rows[f"task=_cli_task:broken opt={opt}"] + 2]  # the failure, on the line below its row
        assert below == "    failed: RuntimeError: broken task: the data is gone"
    assert " to 50.00% " in lines[0] and out.rstrip().endswith(f"compare folder: {folder}")
    assert "2/4 runs finished in " in out and f"report: {folder / 'report.html'}" in out
    for name in ("compare.png", "seeds.png", "summary.txt", "summary.csv", "report.html", "compare.json"):
        assert (folder / name).is_file(), name
    assert len(_report_pngs(folder / "report.html")) == len(list(folder.glob("*.png"))) == 2
    cells = sorted(p for p in folder.iterdir() if p.is_dir())
    assert len(cells) == 4 and all((c / "cell.json").is_file() and (c / "log.txt").is_file() for c in cells)
    ok = [c for c in cells if (c / "history.json").is_file()]
    assert len(ok) == 2 and all(json.loads((c / "result.json").read_text())["status"] == "finished" for c in ok)
    grid_page = (folder / "report.html").read_text()  # links both ways: the grid to each run, each run back
    for c in ok:
        assert f'href="{c.name}/report.html"' in grid_page
        assert 'href="../report.html"' in (c / "report.html").read_text()


def test_compare_options_make_the_axes():
    from onecycle.rungrid import expand_grid
    cells = expand_grid([("command line", {"task": "digits", "lr": "0.1"})],
                        {"seed": [0, 1], "schedule": ["cos", "const"], "opt": ["sgd"]})
    assert [label for label, _ in cells] == [{"schedule": "cos", "seed": 0}, {"schedule": "cos", "seed": 1},
                                            {"schedule": "const", "seed": 0}, {"schedule": "const", "seed": 1}]
    assert all(cfg.opt == "sgd" and cfg.task == "digits" for _, cfg in cells)


# ---- configuration -------------------------------------------------------------------------------
@pytest.mark.parametrize("toml,message", [
    ("lrr = 0.1", "run.toml: unknown key 'lrr' (did you mean 'lr'?)"),
    ("epochs = 0", "run.toml: epochs must be >= 1, got 0"),
    ('epochs = "ten"', "run.toml: epochs must be an integer, got 'ten'"),
    ('opt = "adamx"', "run.toml: opt must be one of"),
    ('lr = "fast"', "run.toml: lr must be a positive number, LO:HI or auto, got 'fast'"),
    ('schedule = "linear"', "run.toml: schedule must be one of"),
    ("moms = [0.95]", "run.toml: moms must be empty or two momentums"),
    ("task_opts = 3", "run.toml: task_opts must be a table of options"),
    ("epochs = [", "run.toml: not valid TOML"),
    ('opt = "sfree_adamw"\nschedule = "cos"', "run.toml: schedule: sfree_adamw is schedule-free: it runs at a constant "
     "LR after a linear warmup (--warmup-pct), so it takes --schedule const, got 'cos'"),
    ('opt = "prodigy"\nlr = "0.1:1"', "run.toml: lr must be one number or auto for prodigy (one LR for every param "
     "group: its d is shared), got '0.1:1'"),
    ('schedule = "wsd"\ndecay = "exp"', "run.toml: decay must be one of ['linear', 'cos', '1-sqrt'], got 'exp'"),
    ('schedule = "wsd"\nwarmup_pct = 0.5\ndecay_pct = 0.6', "run.toml: decay_pct must be <= 1 - warmup_pct (0.5)"),
])
def test_config_file_errors_name_the_key(tmp_path, monkeypatch, capsys, toml, message):
    monkeypatch.chdir(tmp_path)
    Path("run.toml").write_text(toml + "\n")
    assert main(["fit", "--config", "run.toml"]) == 2
    assert message in capsys.readouterr().err


def test_an_optimizer_whose_package_is_missing_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "prodigyopt", None)
    assert main(["fit", "--opt", "prodigy", "--schedule", "wsd"]) == 2
    assert ("command line: opt: optimizer 'prodigy' needs the prodigyopt package: pip install 'onecycle[prodigyopt]'"
            in capsys.readouterr().err)


def test_command_line_errors_name_the_key(capsys):
    assert main(["fit", "--opt", "adamx"]) == 2
    assert "command line: opt must be one of" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse's own check of the type
        main(["fit", "--epochs", "two"])
    assert "--epochs: invalid int value: 'two'" in capsys.readouterr().err


BAD_NAMES = ["x/../../../elsewhere", "a/b", "..", ".", "a\\b", "nul\0byte", "/abs"]
NAME_RULE = "name must be one path component (not empty, '.' or '..'; no '/', '\\' or NUL)"


def _nothing_written(root: Path) -> bool:
    return [p for p in root.rglob("*") if p.name not in ("run.toml", "grid.toml", "config.json")] == []


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_run_name_that_is_not_one_path_component_is_refused_from_the_command_line(tmp_path, capsys, name):
    """``--name 'x/../../../elsewhere'`` once wrote its run folder two levels above ``--out``."""
    out = tmp_path / "a" / "b" / "runs"
    for argv in (["fit", *TINY, "--epochs", "1"], ["find", "--task", "_cli_task:tiny", "--quiet"]):
        assert main([*argv, "--name", name, "--out", str(out)]) == 2
        assert f"command line: {NAME_RULE}, got {name!r}" in capsys.readouterr().err
    assert list(tmp_path.rglob("*")) == []  # refused before anything was written, anywhere


def test_a_run_name_from_a_config_file_or_a_runs_config_json_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("run.toml").write_text('name = "../up"\n')
    assert main(["fit", *TINY, "--config", "run.toml"]) == 2
    assert f"run.toml: {NAME_RULE}, got '../up'" in capsys.readouterr().err
    meta = {"command": "fit", "config": {"task": "_cli_task:tiny", "lr": "0.1", "name": "a/b", "epochs": 1},
            "versions": {}}  # a run's config.json, reused with --config or resumed
    Path("config.json").write_text(json.dumps(meta))
    assert main(["fit", "--config", "config.json"]) == 2
    assert f"config.json: {NAME_RULE}, got 'a/b'" in capsys.readouterr().err
    assert main(["fit", "--resume", "."]) == 2
    assert f"config.json: {NAME_RULE}, got 'a/b'" in capsys.readouterr().err
    assert _nothing_written(tmp_path)


def test_a_cell_or_compare_name_from_a_grid_file_or_the_command_line_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = Path("grid.toml")
    grid.write_text('task = "_cli_task:tiny"\nlr = "0.1"\n[grid]\nname = ["ok", "../../out"]\n')
    assert main(["compare", "--grid", "grid.toml", "--out", "runs"]) == 2
    assert f"grid.toml [grid]: {NAME_RULE}, got '../../out'" in capsys.readouterr().err
    grid.write_text('name = "a/b"\ntask = "_cli_task:tiny"\n')  # the compare's own name
    assert main(["compare", "--grid", "grid.toml", "--out", "runs"]) == 2
    assert f"grid.toml: {NAME_RULE}, got 'a/b'" in capsys.readouterr().err
    for name in ("..", ""):  # a compare has no name to fall back on: empty is refused too
        assert main(["compare", *TINY, "--seed", "0", "1", "--name", name, "--out", "runs"]) == 2
        assert f"command line: {NAME_RULE}, got {name!r}" in capsys.readouterr().err
    grid.write_text('task = "_cli_task:tiny"\nlr = "0.1"\n[grid]\nepochs = [1, 0]\n')  # origins of other keys
    assert main(["compare", "--grid", "grid.toml", "--out", "runs"]) == 2
    assert "grid.toml [grid]: epochs must be >= 1, got 0" in capsys.readouterr().err
    assert main(["compare", "--grid", "grid.toml", "--epochs", "2", "0", "--out", "runs"]) == 2
    assert "command line: epochs must be >= 1, got 0" in capsys.readouterr().err
    assert _nothing_written(tmp_path)


def test_an_overlay_name_is_one_path_component(tmp_path, capsys):
    assert main(["plot", str(tmp_path), str(tmp_path), "--name", "../x", "--out", str(tmp_path / "o")]) == 2
    assert f"command line: {NAME_RULE}, got '../x'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_default_run_name_is_made_one_path_component(tmp_path):
    """A user task's name goes into the default run name; its separators become underscores."""
    assert main(["fit", "--task", "_cli_task:oddly_named", "--lr", "0.1", "--quiet", "--epochs", "1",
                 "--out", str(tmp_path)]) == 0
    (folder,) = tmp_path.iterdir()
    assert folder.name.endswith("-_up_and_back-mlp-sgd-cos") and (folder / "model.pt").is_file()


def test_grid_file_unknown_key(tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text("[grid]\noptt = ['sgd']\n")
    assert main(["compare", "--grid", str(grid)]) == 2
    assert "[grid]: unknown key 'optt' (did you mean 'opt'?)" in capsys.readouterr().err


def test_layers_command_line_beats_file_beats_task_defaults(tmp_path):
    cfg = make_config(FitConfig, [("run.toml", {"task": "mnist1d", "epochs": 5, "wd": 0.0, "lr": 0.05}),
                                  ("command line", {"epochs": 1})])
    assert (cfg.epochs, cfg.wd, cfg.lr) == (1, 0.0, "0.05")
    assert (cfg.opt, cfg.model_opts) == ("adamw", {"channels": 64})  # mnist1d's defaults where unset
    other = make_config(FitConfig, [("command line", {"task": "mnist1d", "model": "mlp"})])
    assert other.model_opts == {}  # the default CNN width does not follow another model


def test_config_file_and_override_reach_the_run(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('task = "_cli_task:tiny"\nepochs = 3\nlr = 0.1\nschedule = "clr_beta"\n'
                      '[task_opts]\nn = 128\n')
    assert main(["fit", "--config", str(config), "--epochs", "1", "--lr", "0.01:0.1", "--quiet",
                 "--out", str(tmp_path / "runs")]) == 0
    meta = json.loads((_only_folder(tmp_path / "runs") / "config.json").read_text())
    assert meta["config"]["epochs"] == 1 and meta["config"]["task_opts"] == {"n": 128}
    assert meta["resolved"]["peaks"] == pytest.approx([0.01, 0.1 * 10 ** -0.5, 0.1])  # the MLP's 3 groups
    assert meta["resolved"]["task"]["name"] == "tiny"


@pytest.mark.parametrize("ref,message", [
    ("no_such_module_xyz:make", "task 'no_such_module_xyz:make': no module named 'no_such_module_xyz'"),
    ("_cli_task:missing", "task '_cli_task:missing': '_cli_task' has no attribute 'missing'"),
    ("_cli_task:NOT_CALLABLE", "task '_cli_task:NOT_CALLABLE' is not callable (a int)"),
    ("_cli_task:not_a_task", "task '_cli_task:not_a_task' returned int, not onecycle.tasks.Task"),
    ("_cli_task:needs_a_path", "task '_cli_task:needs_a_path' cannot be called with no arguments: missing a "
                               "required argument: 'path'"),
    ("os:getcwd", "task 'os:getcwd' cannot be called with (seed=...)"),
    ("mnist2d", "task must be one of ['charlm', 'digits', 'mnist1d', 'mnist1d_large'] or package.module:function"),
])
def test_bad_task_reference_is_named(tmp_path, capsys, ref, message):
    assert main(["fit", "--task", ref, "--lr", "0.1", "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing half-made


def test_model_reference_with_the_wrong_signature_is_named(tmp_path, capsys):
    args = ["fit", "--task", "_cli_task:tiny", "--model", "_cli_task:model_without_shapes", "--lr", "0.1",
            "--out", str(tmp_path)]
    assert main(args) == 2
    assert "model '_cli_task:model_without_shapes' cannot be called with (tuple, int)" in capsys.readouterr().err


def test_user_task_options_are_checked(tmp_path, capsys):
    assert main(["fit", *TINY, "--task-opts", "colour=red", "--out", str(tmp_path)]) == 2
    assert "task_opts: task '_cli_task:tiny' takes no option 'colour'" in capsys.readouterr().err
    assert main(["fit", *TINY, "--model-opts", "hidden=-3", "--out", str(tmp_path)]) == 2
    assert "model_opts {'hidden': -3} do not fit model 'mlp'" in capsys.readouterr().err


def test_user_task_trains(tmp_path):
    assert main(["fit", *TINY, "--epochs", "2", "--out", str(tmp_path)]) == 0
    result = json.loads((_only_folder(tmp_path) / "result.json").read_text())
    assert result["status"] == "finished" and result["final"]["accuracy"] > 0.5


def test_tensorboard_missing_names_the_extra(tmp_path, monkeypatch, capsys):
    """Without the package (its import made to fail, whatever is installed): exit 2 naming the extra,
    before any run folder is made."""
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` raises ImportError
    assert main(["fit", *TINY, "--tensorboard", "--out", str(tmp_path)]) == 2
    assert "pip install 'onecycle[tensorboard]'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_tensorboard_present_logs_every_scalar(tmp_path, monkeypatch):
    """With the package (a stand-in SummaryWriter, whatever is installed): the run logs into its
    folder's tensorboard/ what its history.json holds."""
    import types

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = _FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    monkeypatch.setattr(_FakeWriter, "made", [])
    assert main(["fit", *TINY, "--epochs", "2", "--tensorboard", "--out", str(tmp_path)]) == 0
    folder = _only_folder(tmp_path)
    (writer,) = _FakeWriter.made
    assert Path(writer.log_dir) == folder / "tensorboard"
    hist = json.loads((folder / "history.json").read_text())
    iters = len(hist["losses"])
    assert iters == 2 * 16  # 256 samples, batches of 16, two epochs
    assert writer.scalars["loss/train_iter"] == list(enumerate(hist["losses"]))
    assert [s for s, _ in writer.scalars["lr/group_0"]] == list(range(iters))
    assert writer.scalars["loss/valid"] == [(1, hist["val_losses"][0]), (2, hist["val_losses"][1])]
    assert writer.scalars["metrics/accuracy"] == [(1, hist["metrics"]["accuracy"][0]),
                                                  (2, hist["metrics"]["accuracy"][1])]
    assert writer.flushes >= 2  # each epoch end


def test_schedules_of_every_choice():
    steps = 10
    for name in ("cos", "clr_beta", "const", "step", "triangular"):
        cfg = make_config(FitConfig, [("test", {"schedule": name, "epochs": 2, "div": 10.0})])
        lr, mom = schedules_for(cfg, steps)
        assert 0 < lr(0.0) <= 1 and 0 < lr(1.0) <= 1
        assert (mom is None) == (name in ("const", "step", "triangular"))
    given = {"warmup_pct": 0.1, "decay_pct": 0.3, "decay": "cos", "div_final": 100.0, "epochs": 2}
    for name, opt, want in [("wsd", "sgd", S.wsd(0.1, 0.3, "cos")), ("warmup_cos", "adamw", S.warmup_cos(0.1, 0.01)),
                            ("const", "sfree_sgd", S.wsd(0.1, 0.0)), ("const", "sgd", S.const(1.0)),
                            ("wsd", "prodigy", S.wsd(0.1, 0.3, "cos"))]:
        cfg = make_config(FitConfig, [("test", {**given, "schedule": name, "opt": opt})])
        assert schedules_for(cfg, steps) == (want, None), (name, opt)
    assert S.step((0.5, 0.75), 0.1)(0.6) == pytest.approx(0.1) and S.step()(0.8) == pytest.approx(0.01)
    tri = S.triangular(4.0, 2)
    assert [tri(p) for p in (0, 0.125, 0.25, 0.5, 0.75, 1)] == pytest.approx([0.25, 0.625, 1, 0.25, 1, 0.25])
    with pytest.raises(ValueError, match="milestones must increase"):
        S.step((0.7, 0.5))


# ---- Ctrl-C / SIGTERM and an exact resume ----------------------------------------------------------
def _interrupt_mid_training(args: list[str], sig: int, gate: Path) -> tuple[int, str]:
    """Run ``onecycle`` with the gated loader (``--task-opts gate=...``): once the child waits at its
    gate (20th batch: epoch 1 of 4, batch 4), signal it, then open the gate. Nothing is timed: the
    child is certainly mid-training when the signal comes, and the timeouts only guard against a hang."""
    gate.mkdir()
    with open(gate / "stderr.txt", "w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "onecycle", *args, "--task-opts", f"gate={gate}"],
                                stdout=subprocess.DEVNULL, stderr=err, text=True, env=_env())
        try:
            while not (gate / "waiting").exists():
                if proc.poll() is not None:
                    err.seek(0)
                    raise AssertionError(f"the child ended (rc {proc.returncode}) before its gate: {err.read()}")
                time.sleep(0.01)  # waiting for the file, not for an amount of time
            proc.send_signal(sig)
            (gate / "go").touch()
            rc = proc.wait(timeout=300)
        finally:
            proc.kill()
            proc.wait()
        err.seek(0)
        return rc, err.read()


FIT = ["fit", "--task", "_cli_task:tiny", "--lr", "0.1", "--epochs", "4", "--every", "5", "--ckpt-budget", "0",
       "--threads", "1"]


@pytest.mark.timeout(600)
def test_a_command_hears_sigint_even_where_it_inherited_it_ignored():
    """A job started with & by a non-interactive shell (a CI script) inherits SIGINT ignored, and
    Python then installs no KeyboardInterrupt handler: compare's driver never heard a Ctrl-C (a
    CI run caught it). The command installs Python's own handler for its duration, then puts the
    inherited one back."""
    from onecycle.cli import _signals_interrupt
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(KeyboardInterrupt):
            with _signals_interrupt():
                assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)  # the handler runs at the next bytecode; never reached in full
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # the inherited disposition, back
    finally:
        signal.signal(signal.SIGINT, old)


def test_sigint_exits_130_and_resume_matches_an_uninterrupted_run(tmp_path):
    ref = _cli(*FIT, "--run-dir", str(tmp_path / "ref"), "--quiet", timeout=300)
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "run"
    rc, err = _interrupt_mid_training([*FIT, "--run-dir", str(run)], signal.SIGINT, tmp_path / "gate")
    assert rc == 130, err
    assert f"continue it with: onecycle fit --resume {run}" in err
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "interrupted" and result["signal"] == signal.SIGINT
    assert result["epochs_done"] == 1  # stopped inside epoch 1, right after the gated batch
    assert (run / "last.ckpt").is_file() and (run / "history.json").is_file() and (run / "report.html").is_file()
    resumed = _cli("fit", "--resume", str(run), "--quiet", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    a, b = safe_load(tmp_path / "ref" / "last.ckpt"), safe_load(run / "last.ckpt")
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["recorder"]["losses"], b["recorder"]["losses"])  # the history, packed (float64)
    assert len(b["recorder"]["losses"]) == 64
    assert json.loads((run / "result.json").read_text())["status"] == "finished"


@pytest.mark.timeout(600)
def test_sigterm_exits_143_and_is_resumable(tmp_path):
    run = tmp_path / "run"
    rc, err = _interrupt_mid_training([*FIT, "--run-dir", str(run)], signal.SIGTERM, tmp_path / "gate")
    assert rc == 143, err
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "interrupted" and result["signal"] == signal.SIGTERM and result["epochs_done"] == 1
    assert (run / "last.ckpt").is_file()
    resumed = _cli("fit", "--resume", str(run), "--quiet", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "result.json").read_text())["status"] == "finished"


def test_resume_refuses_other_options_and_busy_or_foreign_folders(tmp_path, capsys):
    assert main(["fit", "--resume", str(tmp_path), "--epochs", "3"]) == 2
    assert "drop --epochs" in capsys.readouterr().err
    assert main(["fit", "--resume", str(tmp_path)]) == 2
    assert "is not a run folder (no config.json)" in capsys.readouterr().err
    first = RunDir(tmp_path, {})
    with pytest.raises(ConfigError, match="in use by another onecycle process"):
        RunDir(tmp_path, {})
    first.close()
    RunDir(tmp_path, {}).close()


# ---- help ------------------------------------------------------------------------------------------
def test_help_lists_commands_and_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    top = capsys.readouterr().out
    assert all(c in top for c in ("demo", "find", "fit", "compare", "plot"))
    from dataclasses import fields

    from onecycle.cli import _COMPARE_OWN
    from onecycle.runconfig import CompareConfig, FindConfig
    for command, classes in (("demo", [FitConfig]), ("fit", [FitConfig]), ("find", [FindConfig]),
                             ("compare", [CompareConfig, FitConfig]), ("plot", [])):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        names = {f.name for cls in classes for f in fields(cls)}
        if command == "compare":
            names -= {"run_dir"}  # each run of a grid gets its own folder
        for name in names:
            assert "--" + name.replace("_", "-") in text, (command, name)
        assert text.count("(default:") >= len(names) + (command in ("demo", "fit", "find")), command
    assert set(_COMPARE_OWN) - {"run_dir"} <= {f.name for f in fields(CompareConfig)}


@pytest.mark.slow
def test_torchrun_ranks_share_one_run_folder(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "-m", "onecycle", "fit", *TINY,
           "--epochs", "2", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    folder = _only_folder(tmp_path)  # rank 0 made it, rank 1 trained into it
    assert json.loads((folder / "result.json").read_text())["status"] == "finished"
    assert (folder / "last.ckpt").is_file() and (folder / "report.html").is_file()
    resumed = subprocess.run(cmd[:6] + ["fit", "--resume", str(folder)], capture_output=True, text=True,
                             timeout=300, env=_env())
    assert resumed.returncode == 0, resumed.stderr[-2000:]


@pytest.mark.parametrize("argv,unknown,close", [(["fit", "--lrr", "0.1"], "--lrr 0.1", "--lr"),
                                                (["find", "--num-iter", "5"], "--num-iter 5", "--num-it"),
                                                (["plot", "x", "--zz"], "--zz", None)])
def test_an_unknown_option_is_named_in_the_commands_usage_with_the_closest(capsys, argv, unknown, close):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: onecycle {argv[0]} ")  # the command's own usage, not "onecycle [-h] COMMAND"
    tail = f" (did you mean {close}?)" if close else ""
    assert err.rstrip().endswith(f"onecycle {argv[0]}: error: unrecognized arguments: {unknown}{tail}")
