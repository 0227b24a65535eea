"""The ``onecycle`` command: argparse options derived from the typed configs of ``runconfig.py``.

    onecycle demo                          LR finder then 1cycle on MNIST-1D with the CNN
    onecycle find --task T --model M ...   LR range test with validation and metrics
    onecycle fit --task T --lr auto ...    train; --resume RUN continues RUN exactly
    onecycle compare --grid grid.toml      a grid of fits in parallel processes, one table and plot
    onecycle plot RUN [RUN ...]            redraw a run's plots and report, or overlay several runs

Options default to ``argparse.SUPPRESS`` so that only what the user typed overrides the config file
(``--config``), which overrides the task's defaults. Exit codes: 0 done, 1 training error, 2 bad
configuration, 130 / 143 stopped by SIGINT / SIGTERM after saving (resumable).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import re
import signal
import sys
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from .runconfig import TASK_DEFAULTS, CompareConfig, ConfigError, FindConfig, FitConfig, field_types

__all__ = ["main", "build_parser"]

_RESUME_KEEPS = {"quiet", "threads"}  # the only options --resume takes beside the folder
_COMPARE_OWN = ("out", "name", "quiet", "run_dir")  # compare options that are not the runs' options


def _default(f: Any) -> Any:
    return f.default_factory() if f.default is MISSING else f.default


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return " ".join(map(str, value)) or "none"
    return "''" if value == "" else str(value)


def _help(f: Any) -> str:
    """The field's help, its default, and the tasks whose defaults differ."""
    text = f"{f.metadata.get('help', '')} (default: {_show(_default(f))}"
    per_task = [f"{task}: {_show(d[f.name])}" for task, d in TASK_DEFAULTS.items() if f.name in d]
    return (text + ("; " + ", ".join(per_task) if per_task else "") + ")").replace("%", "%%")


def _key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as a TOML value (``64``, ``0.5``, ``true``, ``[1, 2]``), else
    kept as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return key, raw


def add_options(parser: argparse.ArgumentParser, cls: type, several: bool = False,
                skip: Sequence[str] = ()) -> None:
    """One ``--option`` per field of ``cls``. ``several``: scalar options take one or more values
    (the axes of a compare grid)."""
    types = field_types(cls)
    for f in fields(cls):
        if f.name in skip:
            continue
        flag, hint = "--" + f.name.replace("_", "-"), types[f.name]
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": _help(f)}
        if hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif hint is dict:
            parser.add_argument(flag, nargs="+", type=_key_value, action="extend", metavar="KEY=VALUE", **kw)
        elif hint is list:
            parser.add_argument(flag, nargs="*", type=float, metavar="X", **kw)
        else:
            scalar = hint if hint in (int, float, str) else float  # float | None: a number when given
            parser.add_argument(flag, type=scalar, nargs="+" if several else None,
                                metavar=f.name.upper(), **kw)


def _given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The options of ``cls`` the user typed (``KEY=VALUE`` lists become dicts)."""
    out = {}
    for f in fields(cls):
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            out[f.name] = dict(value) if field_types(cls)[f.name] is dict else value
    return out


_EPILOG = "Per-task defaults apply to every option left unset; the command line beats --config."


SUBCOMMANDS: dict[str, argparse.ArgumentParser] = {}  # the last build_parser()'s, by command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onecycle", description="Super-convergence experiments: LR range "
                                     "test, 1cycle training, parallel grids, run folders with history, plots "
                                     "and an HTML report.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in (("demo", "LR finder then 1cycle on MNIST-1D with the CNN (well under a minute)"),
                            ("fit", "train (--lr auto: the finder's suggestion); --resume RUN continues RUN")):
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=_EPILOG)
        p.add_argument("--config", metavar="FILE",
                       help="TOML or JSON config file; a run's config.json works too (default: none)")
        if name == "fit":
            p.add_argument("--resume", metavar="RUN", help="continue the run in folder RUN exactly (default: none)")
        add_options(p, FitConfig)
    p = sub.add_parser("find", help="LR range test with validation loss and metrics; prints every suggestion",
                       description="LR range test (validation loss and metrics at every step)", epilog=_EPILOG)
    p.add_argument("--config", metavar="FILE", help="TOML or JSON config file (default: none)")
    add_options(p, FindConfig)
    p = sub.add_parser("compare", help="a grid of fits (schedules x optimizers x LRs x epochs x seeds ...) run "
                       "in parallel processes: one table, one overlay plot",
                       description="Each run option given several values is an axis of the grid; the grid "
                       "file's [grid] table adds more. " + _EPILOG)
    add_options(p, CompareConfig, skip=("ray_address",))
    p.add_argument("--ray", "--ray-address", dest="ray_address", nargs="?", const="local", default=argparse.SUPPRESS,
                   metavar="ADDRESS", help="run the cells as Ray tasks (pip install 'onecycle[ray]'): alone, on a Ray "
                   "started here and stopped afterwards; auto or an address: on that cluster, whose nodes must "
                   "reach the compare folder at the same path (default: local worker processes)")
    add_options(p, FitConfig, several=True, skip=_COMPARE_OWN)
    p = sub.add_parser("plot", help="redraw a run's plots and report; overlay several runs",
                       description="One folder: redraw its PNGs and report.html from history.json (a compare "
                       "folder: its table, overlay and report). Several: overlay them in a new folder.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run or compare folders")
    p.add_argument("--out", default="runs", help="folder the overlay folder is made in (default: runs)")
    p.add_argument("--name", default="overlay", help="name of the overlay folder (default: overlay)")
    SUBCOMMANDS.update(sub.choices)
    return parser


# ---- commands ----------------------------------------------------------------------------------------
def _layers(args: argparse.Namespace, cls: type, base: dict[str, Any] | None = None) -> list:
    layers: list = [("demo", base)] if base else []
    if getattr(args, "config", None):
        from .runconfig import read_config_file
        layers.append((args.config, read_config_file(args.config)))
    layers.append(("command line", _given(args, cls)))
    return layers


def cmd_fit(args: argparse.Namespace) -> int:
    from .runconfig import make_config
    from .runs import resume_fit, run_fit
    started = args.started
    if getattr(args, "resume", None):
        extra = sorted(set(_given(args, FitConfig)) - _RESUME_KEEPS) + (["config"] if args.config else [])
        if extra:
            raise ConfigError(f"--resume continues {args.resume} exactly with its own config: drop "
                              + ", ".join("--" + k.replace("_", "-") for k in extra), "resume")
        given = _given(args, FitConfig)
        resume_fit(args.resume, quiet=given.get("quiet"), threads=given.get("threads"), started=started)
        return 0
    base = {"task": "mnist1d", "name": "demo"} if args.command == "demo" else None
    cfg = make_config(FitConfig, _layers(args, FitConfig, base))
    run_fit(cfg, command=args.command, started=started)
    return 0


def cmd_find(args: argparse.Namespace) -> int:
    from .runconfig import make_config
    from .runs import run_find
    run_find(make_config(FindConfig, _layers(args, FindConfig)), started=args.started)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .compare_report import compare_outputs
    from .htmlpage import fmt_value
    from .report import overlay_runs, redraw, run_facts
    from .run_callbacks import has_history
    from .runconfig import check_name
    from .rundir import run_folder
    folders = [Path(r) for r in args.runs]
    if len(folders) > 1:  # an overlay gets a folder of its own, <out>/<time>-<name>
        check_name("name", args.name, "command line")
    for f in folders:
        if not has_history(f) and not (f / "compare.json").exists() and \
                not (f / "lr_find.json").exists():
            raise ConfigError(f"runs: {str(f)!r} is not a run or compare folder (no history.json)", "runs")
    if len(folders) == 1:
        written = compare_outputs(folders[0]) if (folders[0] / "compare.json").exists() else redraw(folders[0])
        print("\n".join(map(str, written)))
        return 0
    for f in folders:  # what is being overlaid, so a mismatch shows before anyone reads the plot
        v = run_facts(f)
        print(f"{f}: task {v['task']}, optimizer {v['opt']}, peak LR {fmt_value('lr', v['lr'])}")
    written, warnings = overlay_runs(folders, run_folder(args.out, args.name))
    for w in warnings:
        print(f"onecycle plot: warning: {w}", file=sys.stderr)
    print("\n".join(map(str, written)))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare
    from .compare_report import compare_summary
    from .runconfig import make_config
    from .rungrid import expand_grid, read_grid_file
    path = getattr(args, "grid", "")
    file_compare, file_base, axes = read_grid_file(path) if path else ({}, {}, {})
    ccfg = make_config(CompareConfig, [(path, file_compare), ("command line", _given(args, CompareConfig))])
    types, base = field_types(FitConfig), {}
    origins = {key: f"{path} [grid]" for key in axes}  # where each axis came from, for its errors
    for key, value in _given(args, FitConfig).items():
        if key in _COMPARE_OWN:  # the compare's own --out/--name/--quiet, not the runs'
            continue
        if types[key] in (int, float, str) and len(value) > 1:
            axes[key], origins[key] = value, "command line"  # several values: an axis, replacing the file's
        else:
            axes.pop(key, None)
            base[key] = value[0] if types[key] in (int, float, str) else value
    notes: list[str] = []  # a schedule-free optimizer's cells mapped to const
    grid = expand_grid([(path, file_base), ("command line", base)], axes, origins, notes)
    for note in notes:
        print(f"onecycle compare: {note}", flush=True)
    folder, signum = compare(ccfg, grid, {"axes": axes, "base": {**file_base, **base}, "argv": sys.argv[1:],
                                          "notes": notes})
    table = (folder / "summary.txt").read_text(encoding="utf-8")
    print(table + "\n".join(compare_summary(folder)) + f"\ncompare folder: {folder}")
    return 0 if signum is None else 128 + signum


COMMANDS = {"demo": cmd_fit, "fit": cmd_fit, "find": cmd_find, "compare": cmd_compare, "plot": cmd_plot}


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM raises ``TrainingInterrupted`` like Ctrl-C raises ``KeyboardInterrupt``, so the run
    saves what it has on the way out (the Learner installs its own handlers while it trains). SIGINT
    gets Python's own handler even where the process inherited it ignored (a job started with ``&``
    by a non-interactive shell): a command that trains stops on it, as ``fit``'s training does."""
    from .checkpointer import TrainingInterrupted

    def handler(signum: int, frame: Any) -> None:
        raise TrainingInterrupted(signum)

    try:
        old = {signal.SIGTERM: signal.signal(signal.SIGTERM, handler),
               signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for signum, previous in old.items():
            signal.signal(signum, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code: 0, 2 for a bad configuration, 130 / 143 when
    SIGINT / SIGTERM stopped it after saving. Training errors propagate (exit 1 with a traceback)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    tokens = list(sys.argv[1:] if argv is None else argv)
    if extra and tokens.index(args.command) < tokens.index(extra[0]):
        # after the command: said in its own usage, which lists its options, with the closest one
        command = SUBCOMMANDS[args.command]
        flag = next((x.split("=")[0] for x in extra if x.startswith("--")), None)
        close = difflib.get_close_matches(flag, re.findall(r"--[\w-]+", command.format_usage()), n=1,
                                          cutoff=0.75) if flag else []
        command.error(f"unrecognized arguments: {' '.join(extra)}" + (f" (did you mean {close[0]}?)" if close else ""))
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    # A run's time counts from the process start when this is the process's own command line (no
    # argv given: ``python -m onecycle``, the ``onecycle`` script), from now when called as a function.
    from .rundir import process_started
    args.started = process_started() if argv is None else time.perf_counter()
    try:
        with _signals_interrupt():
            return COMMANDS[args.command](args)
    except ConfigError as err:
        print(f"onecycle {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        return 128 + int(getattr(err, "signum", signal.SIGINT))


if __name__ == "__main__":
    sys.exit(main())
