"""Time ``optimizer.step()`` of SGD, LARS, LAMB and AdamW on realistic parameter shapes.

Not a test: a script that prints a table. The question it answers is what the trust ratio costs
per step compared with plain SGD (target: LARS/LAMB at most 1.3x SGD), and what the multi-tensor
(``foreach``) path buys over the per-tensor loop.

Method: every contender gets its own copy of the parameters (with fixed gradients) and all of
them are timed in the same process, interleaved (the order rotates every repeat), so that clock
drift, thermal state and allocator warm-up hit them all alike; each repeat times ``--steps``
consecutive steps, and the median over ``--repeats`` is reported.

    python benchmarks/optim_step.py [--device cuda] [--repeats 15] [--steps 20] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from onecycle.optim.lamb import LAMB
from onecycle.optim.lars import LARS

Shapes = list[tuple[int, ...]]

# The 1-D CNN used in the examples: conv 1->25 k5, two conv 25->25 k3, linear 125->10.
SMALL_CNN: Shapes = [(25, 1, 5), (25,), (25, 25, 3), (25,), (25, 25, 3), (25,), (10, 125), (10,)]
# ~5M parameters in ResNet-like tensors: eight 256x256 3x3 convs, their norm scales/shifts, a head.
FIVE_M: Shapes = [(256, 256, 3, 3)] * 8 + [(256,)] * 16 + [(1000, 256), (1000,)]

CONTENDERS: dict[str, Callable[[list[torch.Tensor]], torch.optim.Optimizer]] = {
    "SGD": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
    "SGD foreach": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4, foreach=True),
    "LARS": lambda p: LARS(p, lr=0.1, momentum=0.9, weight_decay=5e-4, eta=1e-3),
    "LARS loop": lambda p: LARS(p, lr=0.1, momentum=0.9, weight_decay=5e-4, eta=1e-3, foreach=False),
    "LAMB": lambda p: LAMB(p, lr=1e-3, weight_decay=0.01),
    "LAMB loop": lambda p: LAMB(p, lr=1e-3, weight_decay=0.01, foreach=False),
    "AdamW": lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01),
    "AdamW foreach": lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01, foreach=True),
}


def make_params(shapes: Shapes, device: torch.device) -> list[torch.Tensor]:
    """Fresh leaf tensors with small fixed gradients (same values for every contender)."""
    gen = torch.Generator().manual_seed(0)
    params = []
    for shape in shapes:
        p = torch.randn(shape, generator=gen).to(device).requires_grad_(True)
        p.grad = 1e-2 * torch.randn(shape, generator=gen).to(device)
        params.append(p)
    return params


def time_steps(opt: torch.optim.Optimizer, steps: int, device: torch.device) -> float:
    """Seconds per step over ``steps`` consecutive steps (synchronising only at the ends)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps


def bench(shapes: Shapes, device: torch.device, repeats: int, steps: int) -> dict[str, float]:
    """Median seconds per step of every contender, interleaved in one process."""
    opts = {name: make(make_params(shapes, device)) for name, make in CONTENDERS.items()}
    for opt in opts.values():  # warm-up: state allocation, caches, lazy init
        time_steps(opt, 3, device)
    samples: dict[str, list[float]] = {name: [] for name in opts}
    names = list(opts)
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            samples[name].append(time_steps(opts[name], steps, device))
    return {name: statistics.median(s) for name, s in samples.items()}


def report(title: str, shapes: Shapes, medians: dict[str, float]) -> None:
    n_params = sum(torch.Size(s).numel() for s in shapes)
    print(f"\n{title}: {len(shapes)} tensors, {n_params:,} parameters")
    print(f"{'optimizer':<15}{'step (us)':>12}{'x SGD':>9}")
    for name, t in medians.items():
        print(f"{name:<15}{t * 1e6:>12.1f}{t / medians['SGD']:>9.2f}")
    for name in ("LARS", "LAMB"):
        loop = medians[f"{name} loop"] / medians[name]
        print(f"{name}: loop / foreach = {loop:.2f}")
    # LAMB carries Adam's two moments, so AdamW is its like-for-like baseline.
    print(
        f"LAMB / AdamW = {medians['LAMB'] / medians['AdamW']:.2f} (default), "
        f"{medians['LAMB'] / medians['AdamW foreach']:.2f} (both foreach)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}")
    print(f"median of {args.repeats} repeats x {args.steps} steps; 'SGD' is torch's default (momentum 0.9)")
    for title, shapes in (("small 1-D CNN", SMALL_CNN), ("~5M-param set", FIVE_M)):
        report(title, shapes, bench(shapes, device, args.repeats, args.steps))


if __name__ == "__main__":
    main()
