"""Data-parallel training under torchrun with 2 CPU processes (gloo)."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _ddp_job import learner  # noqa: E402

JOB = Path(__file__).parent / "_ddp_job.py"


def torchrun(tmp, *args, nproc=2, timeout=120):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           str(JOB), *args, "--out", str(tmp)]
    env = {**__import__("os").environ, "ONECYCLE_DIST_TIMEOUT": "20", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def ranks(tmp):
    return [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.parametrize("opt", ["sgd", "lars"])
def test_two_ranks_equal_one_process_with_double_batch(tmp_path, opt):
    res = torchrun(tmp_path, "fit", "--opt", opt, "--batch", "8")
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = ranks(tmp_path)
    torch.set_num_threads(1)
    single = learner(16, opt, wd=0.01)
    single.fit_one_cycle(3, 0.1 if opt == "sgd" else 2.0)
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(r0["model"][k], v, atol=1e-6, rtol=1e-5)
        assert torch.equal(r0["model"][k], r1["model"][k])
    # validation: 25 samples over 2 ranks (13 + 12), reduced as sums and counts
    val = single.validate()
    for r in (r0, r1):
        assert r["val"]["val_loss"] == pytest.approx(val["val_loss"], rel=1e-5)
        assert r["val"]["accuracy"] == pytest.approx(val["accuracy"], rel=1e-6)
    assert r0["losses"] == pytest.approx(single.recorder.losses, rel=1e-5)
    assert r0["losses"] == r1["losses"] and r0["val_losses"] == r1["val_losses"]


def test_lr_find_identical_on_both_ranks_and_restored(tmp_path):
    res = torchrun(tmp_path, "lr_find")
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = ranks(tmp_path)
    for key in ("lrs", "losses", "val_losses", "suggestion"):
        assert r0[key] == r1[key], key
    assert r0["same_model"] and r1["same_model"] and r0["same_opt"] and r1["same_opt"]


def test_one_rank_raising_ends_the_job_promptly(tmp_path):
    start = time.monotonic()
    res = torchrun(tmp_path, "raise", timeout=60)
    assert res.returncode != 0
    assert time.monotonic() - start < 30
    assert "boom on purpose" in res.stderr and "raised on rank 1 of 2" in res.stderr


def test_checkpoint_at_world_size_2_resumes_bit_identically(tmp_path):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref_dir.mkdir(), run_dir.mkdir()
    res = torchrun(ref_dir, "resume", "--ckpt", str(ref_dir / "ck"))
    assert res.returncode == 0, res.stderr[-3000:]
    crashed = torchrun(run_dir, "resume", "--ckpt", str(run_dir / "ck"), "--kill-at", "11")
    assert (run_dir / "ck" / "last.ckpt").exists(), crashed.stderr[-3000:]
    res = torchrun(run_dir, "resume", "--ckpt", str(run_dir / "ck"))
    assert res.returncode == 0, res.stderr[-3000:]
    for a, b in zip(ranks(ref_dir), ranks(run_dir)):
        for part in ("model", "opt", "recorder"):
            assert str(a[part]) == str(b[part]) or _equal(a[part], b[part]), part


def _equal(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)
