"""bench/gpu_check.sh (issue 19): its dry run lists every step with its time limit and runs the steps that need
no GPU (the environment, the data, the mixed-precision check on the CPU), as CI can."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support import ROOT

GPU_STEPS = ("tests-cuda", "amp-cuda", "train-bench", "nccl-1", "gloo-2", "quality-224")


def test_the_dry_run_lists_every_step_and_runs_those_that_need_no_gpu(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable)
    res = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    summary = (out / "summary.txt").read_text()
    for name in GPU_STEPS:
        line = next(ln for ln in summary.splitlines() if ln.startswith(name))
        assert "needs a GPU" in line and "s " in line, line
    for name in ("env", "data", "amp-cpu"):  # data writes no log lines; its folder is checked below
        line = next(ln for ln in summary.splitlines() if ln.startswith(name))
        assert " ok " in line, summary
        assert (out / f"{name}.log").exists()
    assert "bf16" in (out / "amp-cpu.log").read_text() and "-> ok" in (out / "amp-cpu.log").read_text()
    assert len(list((out / "data").iterdir())) == 24  # the class folder the GPU steps train on
    # an unknown option is refused
    res = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--bogus"], capture_output=True, text=True)
    assert res.returncode == 2 and "--bogus" in res.stderr


def test_the_distributed_backend_can_be_forced_and_a_wrong_one_is_named(monkeypatch):
    import torch

    from trainer.train import distributed

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29999")
    monkeypatch.setenv(distributed.BACKEND_ENV, "mpi")
    try:
        distributed.init(0, 2, torch.device("cpu"))
    except distributed.DistributedError as exc:
        assert distributed.BACKEND_ENV in str(exc) and "mpi" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("an unknown backend was accepted")
    monkeypatch.setenv(distributed.BACKEND_ENV, "nccl")
    try:
        distributed.init(0, 2, torch.device("cpu"))
    except distributed.DistributedError as exc:
        assert "NCCL needs CUDA" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("NCCL on the CPU was accepted")
