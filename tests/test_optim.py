"""Exact checks of LARS and LAMB against hand-written references and torch's SGD/AdamW.

The references below are deliberately naive: float64, one tensor at a time, formulas spelled out
as in the papers, so that they share no code with the implementations under test.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch

from onecycle.optim.lamb import LAMB
from onecycle.optim.lars import LARS
from onecycle.optim.trust import ratio_stats, trust_ratio, trust_ratios

FOREACH = pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "loop"])


def norm(x: torch.Tensor) -> torch.Tensor:
    return (x * x).sum().sqrt()


def make_tensors(shapes, seed: int, dtype=torch.float64) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]


def make_grads(shapes, steps: int, seed: int = 100, dtype=torch.float64) -> list[list[torch.Tensor]]:
    return [make_tensors(shapes, seed + t, dtype) for t in range(steps)]


def run(opt: torch.optim.Optimizer, params, grads, before_step=None) -> None:
    """Step ``opt`` once per entry of ``grads``; ``before_step(t, opt)`` may edit hyper-parameters."""
    for t, gs in enumerate(grads):
        for p, g in zip(params, gs, strict=True):
            p.grad = None if g is None else g.clone()
        if before_step is not None:
            before_step(t, opt)
        opt.step()


def leaf(ts) -> list[torch.Tensor]:
    return [t.clone().requires_grad_(True) for t in ts]


# ----------------------------------------------------------------------------------------- LARS

SHAPES = [(4, 3), (4,)]  # a 2-D weight and a 1-D bias


def lars_algorithm1(ws, grads, lr, momentum, wd, eta, exclude_1d, lrs=None, moms=None):
    """Algorithm 1 of You et al. 2017 (LR *inside* the velocity), v_0 = 0, per tensor in float64."""
    ws = [w.clone() for w in ws]
    vs = [torch.zeros_like(w) for w in ws]
    for t, gs in enumerate(grads):
        lr_t = lrs[t] if lrs else lr
        m_t = moms[t] if moms else momentum
        for i, g in enumerate(gs):
            w = ws[i]
            if exclude_1d and w.dim() <= 1:
                local, direction = 1.0, g
            else:
                local, direction = eta * norm(w) / (norm(g) + wd * norm(w)), g + wd * w
            vs[i] = m_t * vs[i] + lr_t * local * direction
            ws[i] = w - vs[i]
    return ws


def lars_sgd_convention(ws, grads, lrs, moms, wd, eta, exclude_1d, nesterov):
    """The documented update (LR outside the buffer) with per-step lr/momentum, in float64."""
    ws = [w.clone() for w in ws]
    bufs = [None] * len(ws)
    for t, gs in enumerate(grads):
        for i, g in enumerate(gs):
            w = ws[i]
            if exclude_1d and w.dim() <= 1:
                d = g
            else:
                d = eta * norm(w) / (norm(g) + wd * norm(w)) * (g + wd * w)
            bufs[i] = d if bufs[i] is None else moms[t] * bufs[i] + d
            step = d + moms[t] * bufs[i] if nesterov else bufs[i]
            ws[i] = w - lrs[t] * step
    return ws


@FOREACH
@pytest.mark.parametrize("exclude_1d", [True, False])
def test_lars_matches_algorithm1(foreach, exclude_1d):
    w0, grads = make_tensors(SHAPES, 0), make_grads(SHAPES, 5)
    kw = dict(lr=0.5, momentum=0.9, wd=5e-3, eta=2e-2)
    expected = lars_algorithm1(w0, grads, exclude_1d=exclude_1d, **kw)
    params = leaf(w0)
    opt = LARS(params, lr=0.5, momentum=0.9, weight_decay=5e-3, eta=2e-2, exclude_1d=exclude_1d,
               foreach=foreach)  # fmt: skip
    run(opt, params, grads)
    for p, e in zip(params, expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=0, atol=1e-12)
    moved = [not torch.equal(p.detach(), w) for p, w in zip(params, w0, strict=True)]
    assert all(moved)


@FOREACH
@pytest.mark.parametrize("exclude_1d", [True, False])
def test_lars_nesterov_by_hand(foreach, exclude_1d):
    w0, grads = make_tensors(SHAPES, 1), make_grads(SHAPES, 5)
    expected = lars_sgd_convention(w0, grads, [0.3] * 5, [0.8] * 5, 1e-2, 5e-2, exclude_1d, nesterov=True)
    params = leaf(w0)
    opt = LARS(params, 0.3, 0.8, weight_decay=1e-2, eta=5e-2, nesterov=True, exclude_1d=exclude_1d,
               foreach=foreach)  # fmt: skip
    run(opt, params, grads)
    for p, e in zip(params, expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=0, atol=1e-12)


@FOREACH
@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_with_unit_trust_ratio_is_sgd(foreach, nesterov):
    """One tensor per group and eta = (||g|| + wd ||w||) / ||w|| each step makes every ratio 1."""
    w0, grads = make_tensors(SHAPES, 2), make_grads(SHAPES, 6)
    wd = 1e-2
    params, sgd_params = leaf(w0), leaf(w0)
    opt = LARS([{"params": [p]} for p in params], lr=0.1, momentum=0.9, weight_decay=wd, nesterov=nesterov,
               exclude_1d=False, foreach=foreach)  # fmt: skip
    sgd = torch.optim.SGD([{"params": [p]} for p in sgd_params], lr=0.1, momentum=0.9, weight_decay=wd,
                          nesterov=nesterov)  # fmt: skip

    def unit_eta(t, o):
        for group in o.param_groups:
            (p,) = group["params"]
            group["eta"] = float((norm(p.grad) + wd * norm(p.detach())) / norm(p.detach()))

    run(opt, params, grads, before_step=unit_eta)
    run(sgd, sgd_params, grads)
    for s in opt.last_trust_stats:
        torch.testing.assert_close(s, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-14)
    for p, q in zip(params, sgd_params, strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-12)


@FOREACH
@pytest.mark.parametrize(
    ("eta", "clip", "local_lr"),
    [
        (0.2, False, 2.0),  # ratio 20 > 1/lr: unclipped, the local LR lr*ratio is 20x the global LR
        (0.2, True, 0.1),  # ... and clipping caps it at the global LR
        (1e-4, False, 1e-3),  # ratio 0.01 < lr: unclipped local LR is lr*ratio
        (1e-4, True, 1e-2),  # clipped (LARC) local LR is min(ratio, lr) = ratio
    ],
)
def test_lars_trust_clip_caps_local_lr(foreach, eta, clip, local_lr):
    """||w|| = 10 and ||g|| = 0.1 make the unclipped ratio eta * 100; lr = 0.1, no momentum."""
    lr = 0.1
    w0 = torch.full((2, 2), 5.0, dtype=torch.float64)
    g = torch.full((2, 2), 0.05, dtype=torch.float64)
    (p,) = params = leaf([w0])
    opt = LARS(params, lr=lr, momentum=0.0, eta=eta, trust_clip=clip, foreach=foreach)
    run(opt, params, [[g]])
    torch.testing.assert_close(p.detach(), w0 - local_lr * g, rtol=1e-14, atol=1e-14)
    expected_stats = torch.full((3,), local_lr / lr, dtype=torch.float64)  # the multiplier applied to lr
    torch.testing.assert_close(opt.last_trust_stats[0], expected_stats, rtol=1e-12, atol=0)


@FOREACH
def test_lars_momentum_and_lr_cycling_honoured(foreach):
    w0, grads = make_tensors(SHAPES, 3), make_grads(SHAPES, 5)
    lrs, moms = [0.1, 0.4, 0.8, 0.4, 0.1], [0.95, 0.9, 0.85, 0.9, 0.95]
    expected = lars_sgd_convention(w0, grads, lrs, moms, 1e-3, 1e-2, True, nesterov=False)
    params = leaf(w0)
    opt = LARS(params, lr=0.1, momentum=0.95, weight_decay=1e-3, eta=1e-2, foreach=foreach)

    def cycle(t, o):
        o.param_groups[0]["lr"], o.param_groups[0]["momentum"] = lrs[t], moms[t]

    run(opt, params, grads, before_step=cycle)
    for p, e in zip(params, expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=0, atol=1e-12)
    constant = lars_sgd_convention(w0, grads, lrs, [0.95] * 5, 1e-3, 1e-2, True, nesterov=False)
    assert not torch.allclose(params[0].detach(), constant[0], rtol=0, atol=1e-9)


@FOREACH
def test_lars_weight_decay_is_applied_by_the_optimizer(foreach):
    """With a zero gradient the trust ratio falls back to 1, so one step is pure L2 decay by hand:
    ``w * (1 - lr * wd)`` for the 2-D weight; the excluded 1-D bias does not move. With a gradient,
    one step is ``w - lr * eta ||w|| / (||g|| + wd ||w||) * (g + wd * w)``."""
    w, b = make_tensors(SHAPES, 3)
    params = leaf([w, b])
    opt = LARS(params, lr=0.5, momentum=0.9, weight_decay=0.1, eta=0.02, foreach=foreach)
    run(opt, params, [[torch.zeros_like(w), torch.zeros_like(b)]])
    torch.testing.assert_close(params[0].detach(), w * (1 - 0.5 * 0.1), rtol=0, atol=1e-15)
    assert torch.equal(params[1].detach(), b)

    g = make_tensors([(4, 3)], 4)[0]
    p = leaf([w])
    run(LARS(p, lr=0.5, momentum=0.9, weight_decay=0.1, eta=0.02, foreach=foreach), p, [[g]])
    ratio = 0.02 * norm(w) / (norm(g) + 0.1 * norm(w))
    torch.testing.assert_close(p[0].detach(), w - 0.5 * ratio * (g + 0.1 * w), rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", ["lars", "lamb"])
def test_learner_leaves_weight_decay_to_lars_and_lamb(name):
    """Trained by the Learner with ``wd``, one step of LARS (or LAMB) equals the optimizer's own step
    with ``weight_decay=wd`` on a twin: the decay is applied once, not also by the loop."""
    import onecycle as oc
    from onecycle.data import TensorLoader

    torch.manual_seed(0)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    model = torch.nn.Linear(3, 2)
    twin, no_decay = copy.deepcopy(model), copy.deepcopy(model)
    learn = oc.Learner(model, TensorLoader(x, y, batch_size=8), None, opt=name, wd=0.3, quiet=True, device="cpu")
    learn.fit(0.5, 1)
    ref_cls = LARS if name == "lars" else LAMB
    kw = {"momentum": 0.9} if name == "lars" else {"betas": (0.9, 0.99), "eps": 1e-6}
    for wd, net in ((0.3, twin), (0.0, no_decay)):
        ref = ref_cls(net.parameters(), lr=0.5, weight_decay=wd, **kw)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        ref.step()
    torch.testing.assert_close(model.weight, twin.weight, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(model.bias, twin.bias, rtol=1e-6, atol=1e-7)
    # the tolerance above sees the decay: the same step without it lands outside it (and the loop's own
    # decoupled decay, lr * wd * w = 0.15 * w on top, would land much further)
    assert not torch.allclose(model.weight, no_decay.weight, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------- LAMB

LAMB_SHAPES = [(4, 3), (4,), (3, 2, 3)]


def lamb_reference(ws, grads, lr, betas_per_step, eps, wd, exclude_1d, trust=True):
    """LAMB per tensor in float64, with AdamW's bias correction; ``betas_per_step[t] = (b1, b2)``."""
    ws = [w.clone() for w in ws]
    ms = [torch.zeros_like(w) for w in ws]
    vs = [torch.zeros_like(w) for w in ws]
    for t, gs in enumerate(grads, start=1):
        b1, b2 = betas_per_step[t - 1]
        for i, g in enumerate(gs):
            w = ws[i]
            ms[i] = b1 * ms[i] + (1 - b1) * g
            vs[i] = b2 * vs[i] + (1 - b2) * g * g
            m_hat = ms[i] / (1 - b1**t)
            denom = vs[i].sqrt() / math.sqrt(1 - b2**t) + eps
            adapted = not (exclude_1d and w.dim() <= 1)
            u = m_hat / denom + (wd * w if adapted else 0)
            ratio = norm(w) / norm(u) if adapted and trust else 1.0
            ws[i] = w - lr * ratio * u
    return ws


@FOREACH
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lamb_without_trust_equals_adamw(foreach, dtype):
    w0, grads = make_tensors(LAMB_SHAPES, 4, dtype), make_grads(LAMB_SHAPES, 20, dtype=dtype)
    kw = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.05)
    params, ref = leaf(w0), leaf(w0)
    run(LAMB(params, **kw, trust_ratio=False, exclude_1d=False, foreach=foreach), params, grads)
    run(torch.optim.AdamW(ref, **kw), ref, grads)
    atol = 1e-13 if dtype == torch.float64 else 1e-6  # each dtype at its own precision (20 steps of ~1e-2)
    for p, q in zip(params, ref, strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=atol)


@FOREACH
@pytest.mark.parametrize("exclude_1d", [True, False])
def test_lamb_with_trust_matches_reference(foreach, exclude_1d):
    w0, grads = make_tensors(LAMB_SHAPES, 5), make_grads(LAMB_SHAPES, 3)
    expected = lamb_reference(w0, grads, 0.05, [(0.9, 0.999)] * 3, 1e-6, 0.01, exclude_1d)
    params = leaf(w0)
    opt = LAMB(params, lr=0.05, weight_decay=0.01, exclude_1d=exclude_1d, foreach=foreach)
    run(opt, params, grads)
    for p, e in zip(params, expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=0, atol=1e-12)


@FOREACH
def test_lamb_beta_cycling_honoured(foreach):
    """A scheduler replaces ``group['betas']`` with a new tuple between steps; each one is used."""
    w0, grads = make_tensors(LAMB_SHAPES, 6), make_grads(LAMB_SHAPES, 4)
    betas = [(0.95, 0.999), (0.85, 0.99), (0.9, 0.995), (0.8, 0.999)]
    expected = lamb_reference(w0, grads, 0.02, betas, 1e-6, 0.01, True)
    params, adamw_params = leaf(w0), leaf(w0)
    opt = LAMB(params, lr=0.02, weight_decay=0.01, foreach=foreach)
    run(opt, params, grads, before_step=lambda t, o: o.param_groups[0].update(betas=betas[t]))
    for p, e in zip(params, expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=0, atol=1e-12)
    # Trust off: the same cycling must give what AdamW gives with the same cycling.
    params = leaf(w0)
    opt = LAMB(params, lr=0.02, weight_decay=0.01, trust_ratio=False, exclude_1d=False, foreach=foreach)
    adamw = torch.optim.AdamW(adamw_params, lr=0.02, eps=1e-6, weight_decay=0.01)
    run(opt, params, grads, before_step=lambda t, o: o.param_groups[0].update(betas=betas[t]))
    run(adamw, adamw_params, grads, before_step=lambda t, o: o.param_groups[0].update(betas=betas[t]))
    for p, q in zip(params, adamw_params, strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------- shared behaviour

# A small CNN's shapes, a zero-initialised head (zero ||w||), a float64 tensor (second device/dtype
# bucket), and a frozen tensor whose grad stays None.
CNN_SHAPES = [(8, 3, 3, 3), (8,), (8,), (8,), (16, 8, 3, 3), (16,), (10, 64), (10,)]
FROZEN = 9


def cnn_setup(steps: int):
    w = make_tensors(CNN_SHAPES, 7, torch.float32)
    w[6] = torch.zeros(10, 64)
    w += [torch.randn(6, 4, dtype=torch.float64), torch.randn(5, 5)]
    grads = [make_tensors(CNN_SHAPES, 200 + t, torch.float32) for t in range(steps)]
    for t, gs in enumerate(grads):
        gs += [torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(t)), None]
        gs[4] = torch.zeros(16, 8, 3, 3) if t == 0 else gs[4]  # zero gradient: ratio falls back to 1
    return w, grads


def cnn_groups(ps: list[torch.Tensor]) -> list[dict]:
    """Conv weights; only 1-D tensors; head + float64 + frozen tensors with their own weight decay."""
    return [
        {"params": [ps[0], ps[4]]},
        {"params": [ps[1], ps[2], ps[3], ps[5]]},
        {"params": ps[6:], "weight_decay": 0.02},
    ]


LARS_CONFIGS = [
    dict(lr=0.5, momentum=0.9, weight_decay=1e-3, eta=1e-2),
    dict(lr=0.5, momentum=0.9, weight_decay=1e-3, eta=1e-2, exclude_1d=False, nesterov=True),
    dict(lr=0.2, momentum=0.8, weight_decay=0.0, eta=0.5, trust_clip=True, eps=1e-8),
]
LAMB_CONFIGS = [
    dict(lr=1e-2, weight_decay=0.01),
    dict(lr=1e-2, weight_decay=0.01, exclude_1d=False),
    dict(lr=1e-2, weight_decay=0.0, trust_ratio=False),
]


# float32 rounding differs between the two (fused addcmul vs separate ops); 1e-6, relative for the
# few entries above 1 in magnitude, is a couple of ulps.
TOL = dict(rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("cls", "config"), [(LARS, c) for c in LARS_CONFIGS] + [(LAMB, c) for c in LAMB_CONFIGS]
)
def test_foreach_agrees_with_loop(cls, config):
    w0, grads = cnn_setup(steps=6)
    fast, slow = leaf(w0), leaf(w0)
    opt_fast, opt_slow = (
        cls(cnn_groups(fast), **config, foreach=True),
        cls(cnn_groups(slow), **config, foreach=False),
    )
    for gs in grads:
        run(opt_fast, fast, [gs])
        run(opt_slow, slow, [gs])
        for a, b in zip(opt_fast.last_trust_stats, opt_slow.last_trust_stats, strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, **TOL)
    for p, q in zip(fast, slow, strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), **TOL)
    for p, q in zip(fast, slow, strict=True):
        for key, value in opt_fast.state[p].items():
            torch.testing.assert_close(value, opt_slow.state[q][key], **TOL)
    assert torch.equal(fast[FROZEN].detach(), w0[FROZEN]) and len(opt_fast.state[fast[FROZEN]]) == 0


@FOREACH
def test_exclude_1d_is_a_per_group_key(foreach):
    """Group 0 excludes its bias, group 1 adapts and decays everything, in one optimizer."""
    w0, grads = make_tensors(SHAPES * 2, 10), make_grads(SHAPES * 2, 4)
    kw = dict(lr=0.5, momentum=0.9, wd=5e-3, eta=2e-2)
    lars_expected = lars_algorithm1(w0[:2], [g[:2] for g in grads], exclude_1d=True, **kw)
    lars_expected += lars_algorithm1(w0[2:], [g[2:] for g in grads], exclude_1d=False, **kw)
    lamb_expected = lamb_reference(w0[:2], [g[:2] for g in grads], 0.05, [(0.9, 0.999)] * 4, 1e-6, 0.01, True)
    lamb_expected += lamb_reference(
        w0[2:], [g[2:] for g in grads], 0.05, [(0.9, 0.999)] * 4, 1e-6, 0.01, False
    )
    for make, expected in (
        (
            lambda gs: LARS(gs, lr=0.5, momentum=0.9, weight_decay=5e-3, eta=2e-2, foreach=foreach),
            lars_expected,
        ),
        (lambda gs: LAMB(gs, lr=0.05, weight_decay=0.01, foreach=foreach), lamb_expected),
    ):
        params = leaf(w0)
        run(make([{"params": params[:2]}, {"params": params[2:], "exclude_1d": False}]), params, grads)
        for p, e in zip(params, expected, strict=True):
            torch.testing.assert_close(p.detach(), e, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("cls", "config"), [(LARS, LARS_CONFIGS[1]), (LAMB, LAMB_CONFIGS[0])])
@FOREACH
def test_state_dict_round_trip(cls, config, foreach):
    w0, grads = cnn_setup(steps=13)
    params = leaf(w0)
    opt = cls(params, **config, foreach=foreach)
    run(opt, params, grads[:3])
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    clone_params = [copy.deepcopy(p) for p in params]
    clone = cls(clone_params, **config, foreach=foreach)
    buffer.seek(0)
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    for gs in grads[3:]:
        run(opt, params, [gs])
        run(clone, clone_params, [gs])
        for p, q in zip(params, clone_params, strict=True):
            assert torch.equal(p, q)
    for p, q in zip(params, clone_params, strict=True):
        for key, value in opt.state[p].items():
            other = clone.state[q][key]
            assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other


def test_last_trust_stats_lars_equals_direct_computation():
    w0, grads = make_tensors([(4, 3), (4,), (5, 2), (3,)], 8), make_grads([(4, 3), (4,), (5, 2), (3,)], 1)
    params = leaf(w0)
    wd, eta = 1e-2, 3e-2
    opt = LARS([{"params": params[:3]}, {"params": params[3:]}], weight_decay=wd, eta=eta)
    run(opt, params, grads)
    adapted = [0, 2]  # group 0 holds tensors 0-2; tensor 1 is 1-D and excluded
    direct = torch.stack([eta * norm(w0[i]) / (norm(grads[0][i]) + wd * norm(w0[i])) for i in adapted])
    expected = torch.stack([direct.mean(), direct.min(), direct.max()])
    torch.testing.assert_close(opt.last_trust_stats[0], expected, rtol=1e-12, atol=0)
    assert opt.last_trust_stats[1] is None  # only a 1-D tensor: nothing adapted


@FOREACH
def test_last_trust_stats_lamb_equals_direct_computation(foreach):
    """At t = 1 the bias-corrected Adam direction is g / (|g| + eps), so ratios are closed-form."""
    shapes = [(4, 3), (4,), (5, 2), (2, 2, 2)]
    w0, grads = make_tensors(shapes, 9), make_grads(shapes, 1)
    params, wd, eps = leaf(w0), 0.1, 1e-6
    opt = LAMB(params, eps=eps, weight_decay=wd, foreach=foreach)
    run(opt, params, grads)
    pairs = zip(w0, grads[0], strict=True)
    ratios = [norm(w) / norm(g / (g.abs() + eps) + wd * w) for w, g in pairs if w.dim() > 1]
    direct = torch.stack(ratios)
    expected = torch.stack([direct.mean(), direct.min(), direct.max()])
    torch.testing.assert_close(opt.last_trust_stats[0], expected, rtol=1e-12, atol=0)
    opt.param_groups[0]["trust_ratio"] = False
    run(opt, params, grads)
    assert opt.last_trust_stats == [None]


def test_trust_helpers():
    w = [torch.ones(2, 2), torch.zeros(3), torch.full((4,), 2.0)]
    g = [torch.full((2, 2), 0.5), torch.ones(3), torch.zeros(4)]
    ratios = trust_ratios(w, g, eta=0.1, weight_decay=0.5)
    torch.testing.assert_close(ratios, torch.tensor([0.1 * 2 / (1 + 0.5 * 2), 1.0, 1.0]))
    for i in range(3):
        torch.testing.assert_close(trust_ratio(w[i], g[i], 0.1, 0.5), ratios[i])
    torch.testing.assert_close(trust_ratios(w, g, 0.1, 0.5, clip_lr=0.01)[0], torch.tensor(1.0))
    torch.testing.assert_close(ratio_stats(list(ratios.unbind(0))), torch.tensor([0.7, 0.1, 1.0]))
    assert ratio_stats([]) is None
    torch.testing.assert_close(trust_ratio(w[0], g[0], 0.1, 0.5, eps=0.5), torch.tensor(0.2 / 2.5))
    torch.testing.assert_close(trust_ratios(w, g, 0.1, 0.5, eps=0.5)[0], torch.tensor(0.2 / 2.5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_trust_ratios_of_large_tensors(dtype):
    """Large CPU tensors take the dot-product norm path; it must match a float64 reference."""
    w = make_tensors([(256, 128), (300, 100), (128, 3, 3, 16)], 11, dtype)
    g = [1e-3 * t for t in make_tensors([(256, 128), (300, 100), (128, 3, 3, 16)], 12, dtype)]
    g[1] = g[1][:, ::2]  # a non-contiguous gradient view (needs a copy to flatten)
    w[1] = w[1][:, ::2]
    expected = torch.stack(
        [0.02 * norm(a.double()) / (norm(b.double()) + 0.1 * norm(a.double())) for a, b in zip(w, g)]
    )
    torch.testing.assert_close(trust_ratios(w, g, 0.02, 0.1).double(), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("cls", [LARS, LAMB])
def test_unpickling_an_optimizer_without_new_keys(cls):
    """``__setstate__`` fills group keys that an older pickled optimizer would lack."""
    w0, grads = make_tensors(SHAPES, 13), make_grads(SHAPES, 2)
    params, ref = leaf(w0), leaf(w0)
    opt, expected = cls(params), cls(ref)
    state = opt.__getstate__()
    for key in ("exclude_1d", "foreach", "nesterov", "trust_clip", "eps", "trust_ratio"):
        if key != "eps" or cls is LARS:
            state["param_groups"][0].pop(key, None)
    opt.__setstate__(state)
    run(opt, params, grads)
    run(expected, ref, grads)
    for p, q in zip(params, ref, strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("cls", [LARS, LAMB])
@FOREACH
def test_step_never_reads_tensor_values_on_host(cls, foreach):
    """On the meta device any .item()/bool() raises, so a completed step proves no host sync."""
    params = [torch.randn(4, 3, device="meta", requires_grad=True), torch.randn(4, device="meta")]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = cls(params, weight_decay=0.1, foreach=foreach)
    opt.step()
    opt.step()
    assert opt.last_trust_stats[0].shape == (3,)
    with pytest.raises(RuntimeError):
        bool(params[0].sum() > 0)
    with pytest.raises(RuntimeError):
        params[0].sum().item()


@pytest.mark.parametrize("cls", [LARS, LAMB])
def test_sparse_gradients_rejected(cls):
    p = torch.zeros(3, 2, requires_grad=True)
    p.grad = torch.sparse_coo_tensor([[0]], [[1.0, 1.0]], (3, 2), check_invariants=True)
    with pytest.raises(RuntimeError, match="sparse"):
        cls([p]).step()


@pytest.mark.parametrize(
    ("cls", "kwargs", "name"),
    [
        (LARS, dict(lr=-0.1), "lr"),
        (LARS, dict(momentum=-0.1), "momentum"),
        (LARS, dict(momentum=1.0), "momentum"),
        (LARS, dict(weight_decay=-1e-4), "weight_decay"),
        (LARS, dict(eta=-1e-3), "eta"),
        (LARS, dict(eps=-1e-8), "eps"),
        (LARS, dict(momentum=0.0, nesterov=True), "nesterov"),
        (LAMB, dict(lr=-1e-3), "lr"),
        (LAMB, dict(betas=(1.0, 0.999)), "betas"),
        (LAMB, dict(betas=(0.9, -0.1)), "betas"),
        (LAMB, dict(betas=(0.9,)), "betas"),
        (LAMB, dict(eps=-1e-6), "eps"),
        (LAMB, dict(weight_decay=-0.01), "weight_decay"),
    ],
)
def test_bad_hyper_parameters_rejected(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls([torch.zeros(2, 2, requires_grad=True)], **kwargs)


# ------------------------------------------------------------- the Learner's optimizers by name

def test_optimizers_by_name_are_the_documented_configurations():
    """The README's "Choices worth knowing": "sgd" is torch's SGD (momentum 0.9, foreach), "adam" and
    "adamw" torch's AdamW with betas (0.9, 0.99), eps 1e-5 and no weight decay of its own (the
    Learner's hook decays); LARS with momentum 0.9, LAMB with betas (0.9, 0.99) and eps 1e-6."""
    from onecycle.optim import OPTIMIZERS, build_optimizer
    assert sorted(OPTIMIZERS) == ["adam", "adamw", "lamb", "lars", "prodigy", "sfree_adamw", "sfree_sgd", "sgd"]
    w = [torch.nn.Parameter(torch.zeros(2, 2))]
    sgd = build_optimizer("sgd", [w])
    assert type(sgd) is torch.optim.SGD
    assert {k: sgd.defaults[k] for k in ("lr", "momentum", "foreach", "nesterov", "weight_decay")} == {
        "lr": 1e-3, "momentum": 0.9, "foreach": True, "nesterov": False, "weight_decay": 0}
    for name in ("adam", "adamw"):
        adamw = build_optimizer(name, [w])
        assert type(adamw) is torch.optim.AdamW
        assert {k: adamw.defaults[k] for k in ("lr", "betas", "eps", "weight_decay", "foreach", "amsgrad")} == {
            "lr": 1e-3, "betas": (0.9, 0.99), "eps": 1e-5, "weight_decay": 0.0, "foreach": True, "amsgrad": False}
    lars = build_optimizer("lars", [w])
    assert type(lars) is LARS and lars.defaults["momentum"] == 0.9 and lars.defaults["lr"] == 1e-3
    assert {k: v for k, v in lars.defaults.items() if k not in ("lr", "momentum")} == {
        k: v for k, v in LARS([torch.nn.Parameter(torch.zeros(1))], lr=1.0).defaults.items()
        if k not in ("lr", "momentum")}  # LARS's own defaults otherwise
    lamb = build_optimizer("lamb", [w])
    assert type(lamb) is LAMB and lamb.defaults["betas"] == (0.9, 0.99) and lamb.defaults["eps"] == 1e-6
    assert lamb.defaults["lr"] == 1e-3


def test_each_named_factory_takes_the_lr_it_is_given():
    from onecycle.optim import OPTIMIZERS
    for name, factory in OPTIMIZERS.items():
        opt = factory([{"params": [torch.nn.Parameter(torch.zeros(2))]}], 0.5)
        assert opt.param_groups[0]["lr"] == 0.5 and opt.defaults["lr"] == 0.5, name


def test_build_optimizer_one_param_group_per_layer_group_from_a_name_or_a_factory():
    from onecycle.optim import build_optimizer
    a = [torch.nn.Parameter(torch.zeros(2))]
    b = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(1))]
    opt = build_optimizer("sgd", [a, b])
    assert [g["params"] for g in opt.param_groups] == [a, b]
    made = []

    def factory(groups, lr):
        made.append(([dict(g) for g in groups], lr))  # as given (the optimizer adds its defaults)
        return torch.optim.RMSprop(groups, lr=lr)

    opt = build_optimizer(factory, [a, b])
    assert type(opt) is torch.optim.RMSprop and [g["params"] for g in opt.param_groups] == [a, b]
    assert made == [([{"params": a}, {"params": b}], 1e-3)]


def test_build_optimizer_refuses_a_factory_that_does_not_make_one_optimizer_per_group():
    from onecycle.optim import build_optimizer
    a, b = [torch.nn.Parameter(torch.zeros(2))], [torch.nn.Parameter(torch.zeros(3))]
    with pytest.raises(TypeError, match=r"^the optimizer factory returned list, not an Optimizer$"):
        build_optimizer(lambda groups, lr: groups, [a, b])
    with pytest.raises(ValueError, match=r"^the optimizer factory made 1 param groups from 2 layer groups$"):
        build_optimizer(lambda groups, lr: torch.optim.SGD(a + b, lr=lr), [a, b])


def test_optimizer_factory_takes_a_name_in_any_case_or_a_callable():
    from onecycle.optim import optimizer_factory
    assert optimizer_factory("SGD") == "sgd" and optimizer_factory("AdamW") == "adamw"
    assert optimizer_factory(LARS) is LARS
    with pytest.raises(ValueError, match=r"^opt must be one of \['adam', 'adamw', 'lamb', 'lars', 'prodigy', "
                                         r"'sfree_adamw', 'sfree_sgd', 'sgd'\] or a factory, got 'adagrad'$"):
        optimizer_factory("adagrad")
    with pytest.raises(TypeError, match=r"^opt must be a name or a factory \(params, lr\) -> Optimizer, got 3$"):
        optimizer_factory(3)
