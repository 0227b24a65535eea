"""Data-parallel training under torchrun with 2 CPU processes (gloo)."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _ddp_job import first_difference, learner  # noqa: E402

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
    assert r0["same_model"] and r1["same_model"]
    assert r0["same_opt"] is None and r1["same_opt"] is None, (r0["same_opt"], r1["same_opt"])


@pytest.mark.timeout(400)
def test_one_rank_raising_ends_the_job_promptly(tmp_path):
    """Rank 1 raises mid-fit while rank 0 waits in a collective: the job ends (the generous timeouts
    only guard against a hang) with torchrun's failure status, naming the rank and the error; no
    rank finishes its fit."""
    res = torchrun(tmp_path, "raise", timeout=300)
    assert res.returncode == 1, res.stderr[-3000:]
    assert "boom on purpose at batch 5" in res.stderr
    assert "raised on rank 1 of 2" in res.stderr
    assert not list(tmp_path.glob("rank*.pt"))


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
            assert first_difference(a[part], b[part], part) is None, first_difference(a[part], b[part], part)


def test_first_difference_is_exact():
    """The comparison the tests above rely on sees a difference in the last bit, which printing hides."""
    x = torch.tensor([1.5, 2.25])
    y = x.clone()
    y[1] = torch.nextafter(y[1], torch.tensor(3.0))
    assert str(x) == str(y)  # what the old comparison looked at
    assert first_difference({"w": [x]}, {"w": [x.clone()]}) is None
    assert first_difference({"w": [x]}, {"w": [y]}) == "['w'][0]: tensors differ"
    assert first_difference({"lr": 0.1}, {"lr": 0.1}) is None
    assert first_difference({"lr": 0.1}, {"lr": math.nextafter(0.1, 1)}) == "['lr']: 0.1 vs 0.10000000000000002"
    assert first_difference(x, x.double()) == ": tensors differ"
    assert first_difference([1, 2], [1, 2, 3]) == ": lengths 2 vs 3"
