"""Does the default rule gain from reading the centred curve the plots draw? (issue 22)

The demo's configuration (``onecycle demo``: MNIST-1D, the 64-channel CNN, AdamW, weight decay 0.1,
batch 64, 20 epochs of 1cycle), for each seed one range test, then two fits from the same initial
model: at ``val_min`` (half the LR of the causal EMA's minimum, the default) and at the LR of the
centred validation curve's minimum (``val_min1@c`` in ``suggestion_quality.py``, whose own protocol
scores it on other seeds and configurations).

    OMP_NUM_THREADS=1 python benchmarks/suggestion_curve.py 0 1 2

About 10 fits of 20 epochs; a minute or two on an idle 2-core machine.
"""

import json
import sys

from onecycle.runbuild import build_learner
from onecycle.runconfig import FitConfig, make_config
from onecycle.smoothing import range_test_curve
from onecycle.suggest import SUGGESTERS


def learner(seed: int):
    cfg = make_config(FitConfig, [("demo", {"task": "mnist1d", "name": "demo"}), ("seed", {"seed": seed,
                                                                                             "quiet": True})])
    return build_learner(cfg)[0]


def main(seeds: list[int]) -> dict:
    out: dict = {}
    for seed in seeds:
        res = learner(seed).lr_find()
        n = len(res.lrs)
        window = slice(res.num_it // 10, n - 5)  # as suggest() cuts
        peaks = {"val_min (EMA)": res.suggestions["val_min"],
                 "val_min1@c": SUGGESTERS["val_min"](res.lrs[window], range_test_curve(res.val_losses)[window],
                                                     div=1.0)}
        for name, lr in peaks.items():
            learn = learner(seed)
            learn.fit_one_cycle(20, lr, moms=(0.95, 0.85, 0.95))
            acc = learn.recorder.metrics["accuracy"]
            out.setdefault(name, []).append({"seed": seed, "lr": lr, "final": acc[-1], "best": max(acc)})
            print(f"seed {seed} {name:<14} peak {lr:.4g}: final {100 * acc[-1]:.2f}%, best {100 * max(acc):.2f}%",
                  flush=True)
    for name, runs in out.items():
        mean = sum(r["final"] for r in runs) / len(runs)
        print(f"{name:<14} mean final accuracy {100 * mean:.2f}%")
    return out


if __name__ == "__main__":
    print(json.dumps(main([int(s) for s in sys.argv[1:]] or [0, 1, 2])))
