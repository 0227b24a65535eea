"""What the pictures cost: (a) drawing all of a run's plots plus its report.html in a fresh process,
matplotlib's import included, and (b) ``onecycle demo`` end to end (the process's wall time, from
exec to exit; installing the package and the data excluded). Targets (issue 15): (a) <= 2 s and
(b) <= 20 s on a quiet machine. Prints the load average too: on a shared machine the numbers mean
little without it.

    python benchmarks/drawing.py                # a demo run (timed), then its drawing, 3 times each
    python benchmarks/drawing.py --repeats 5 --run runs/XXXX-demo   # drawing only, of an existing run

Each drawing is timed inside a fresh interpreter that has already imported onecycle (torch is
loaded in any process that trains, so it is not the drawing's cost) and then imports the report and
matplotlib, draws every PNG (``report.draw_plots``) and writes ``report.html``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = """
import json, sys, time
import onecycle  # torch: already there in the process that trained
t0 = time.perf_counter()
import matplotlib.figure  # noqa: F401  (its import is part of the drawing's cost)
t1 = time.perf_counter()
from onecycle.report import draw_plots, run_report
written = draw_plots(sys.argv[1])
t2 = time.perf_counter()
run_report(sys.argv[1])
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "plots": t2 - t1, "report": t3 - t2, "total": t3 - t0,
                  "files": [p.name for p in written]}))
"""


def _env() -> dict:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min), {os.cpu_count()} CPUs"


def time_demo(out: Path, extra: list[str]) -> tuple[float, Path]:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "onecycle", "demo", "--out", str(out), "--quiet", *extra], check=True,
                   env=_env())
    wall = time.perf_counter() - start
    newest = max((p for p in out.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return wall, newest


def time_drawing(folder: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(folder)], check=True, capture_output=True, text=True,
                         env=_env())
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="demo runs and drawings, each (median reported)")
    parser.add_argument("--run", default="", help="an existing run folder: time its drawing only")
    parser.add_argument("--demo-args", nargs=argparse.REMAINDER, default=[], help="extra options for the demo")
    args = parser.parse_args()
    print(load())
    if args.run:
        folder = Path(args.run)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            walls = []
            for _ in range(args.repeats):
                wall, folder = time_demo(Path(tmp), args.demo_args)
                split = json.loads((folder / "result.json").read_text())["time"]
                walls.append(wall)
                print(f"onecycle demo: {wall:.2f} s end to end; the run's own split: "
                      + ", ".join(f"{k} {v:.2f} s" for k, v in split.items()))
            print(f"(b) onecycle demo end to end: median {statistics.median(walls):.2f} s over {len(walls)} "
                  f"(target <= 20 s); {load()}")
            _drawing(folder, args.repeats)
            return
    _drawing(folder, args.repeats)


def _drawing(folder: Path, repeats: int) -> None:
    runs = []
    for _ in range(repeats):
        runs.append(time_drawing(folder))
        r = runs[-1]
        print(f"drawing {', '.join(r['files'])} + report.html: {r['total']:.2f} s (matplotlib import "
              f"{r['import']:.2f} s, plots {r['plots']:.2f} s, report {r['report']:.2f} s)")
    print(f"(a) all of a run's plots plus its report, fresh process: median "
          f"{statistics.median(r['total'] for r in runs):.2f} s over {len(runs)} (target <= 2 s); {load()}")


if __name__ == "__main__":
    main()
