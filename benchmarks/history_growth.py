"""Does a long run's time outside training grow with its length? (issue 21) ``onecycle fit --task
digits --lr 0.1 --epochs N`` for N in ``--epochs`` (3 150 300 by default), each in a fresh process
through ``onecycle.cli.main``, with one instrument: the time every ``after_epoch`` hook takes (saving
the history, the epoch-end checkpoint, ...), per epoch. Printed per N: the run's own time split
(``result.json``: total, training, the rest), the time outside training per epoch, and the epoch-end
hooks' mean time over the first, middle and last 10 epochs. Flat means linear: a whole-history
rewrite at every epoch end makes the last epochs' hooks cost ~N times the first ones'.

    python benchmarks/history_growth.py
    python benchmarks/history_growth.py --epochs 100 300 600 --src /tmp/old/src   # another checkout too
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_CHILD = """
import json, sys, time
from onecycle import cli, loop
hook_times = []
call = loop.Loop.call
def timed(self, hook):
    if hook != "after_epoch":
        return call(self, hook)
    t = time.perf_counter()
    call(self, hook)
    hook_times.append(time.perf_counter() - t)
loop.Loop.call = timed
out, epochs = sys.argv[1], sys.argv[2]
cli.main(["fit", "--task", "digits", "--lr", "0.1", "--epochs", epochs, "--run-dir", out, "--quiet"])
print(json.dumps(hook_times))
"""


def one(src: Path, epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        done = subprocess.run([sys.executable, "-c", _CHILD, str(out), str(epochs)], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(src)}, check=True)
        hooks = json.loads(done.stdout.strip().splitlines()[-1])
        split = json.loads((out / "result.json").read_text())["time"]
    mid = len(hooks) // 2
    return {"split": split, "first": hooks[:10], "middle": hooks[max(0, mid - 5):mid + 5], "last": hooks[-10:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, nargs="+", default=[3, 150, 300])
    ap.add_argument("--src", nargs="*", default=[], help="other checkouts' src folders to time too")
    args = ap.parse_args()
    srcs = [REPO / "src", *map(Path, args.src)]
    print(f"{'src':<28} {'epochs':>6} {'total':>7} {'training':>8} {'outside':>8} {'outside/ep':>10}   "
          "after_epoch hooks, mean ms: first 10 / middle 10 / last 10   load")
    for epochs in args.epochs:
        for src in srcs:  # the checkouts alternate at each length
            load = os.getloadavg()[0]
            r = one(src, epochs)
            s = r["split"]
            outside = s["total"] - s["training"]
            ms = " / ".join(f"{1000 * statistics.mean(r[k]):.2f}" for k in ("first", "middle", "last"))
            print(f"{str(src)[-28:]:<28} {epochs:>6} {s['total']:6.2f}s {s['training']:7.2f}s {outside:7.2f}s "
                  f"{1000 * outside / epochs:8.1f}ms   {ms:<40} {load:.2f}", flush=True)


if __name__ == "__main__":
    main()
