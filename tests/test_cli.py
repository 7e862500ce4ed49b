"""The command line: --help, losses, train -> evaluate -> embed on a tiny folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np

from tests.support.runs import make_folder
from tests.support import ROOT



def run(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_help_documents_every_command():
    res = run("--help")
    assert res.returncode == 0
    for word in ("--demo", "train", "embed", "evaluate", "losses"):
        assert word in res.stdout
    res = run("train", "--help")
    assert res.returncode == 0
    for opt in ("--loss", "--miner", "--backbone", "--no-pretrained", "--epochs", "--embedding-dim", "--image-size",
                "--batch-classes", "--batch-per-class", "--lr", "--test-dir", "--seed", "--device", "--resume",
                "--margin", "--loss-lr", "--head-lr-mult"):
        assert opt in res.stdout, opt


def test_learning_rate_options_reach_the_config():
    sys.path.insert(0, str(ROOT))
    import main

    args = main._train_parser().parse_args(["data", "--out", "o", "--lr", "2e-4", "--loss-lr", "0.05",
                                            "--head-lr-mult", "4"])
    cfg = main._config_from_args(args)
    assert (cfg.optim.lr, cfg.optim.loss_lr, cfg.optim.head_lr_mult) == (2e-4, 0.05, 4.0)
    cfg = main._config_from_args(main._train_parser().parse_args(["data", "--out", "o"]))
    assert cfg.optim.head_lr_mult is None  # automatic: 10 on a pretrained backbone, 1 from scratch


def test_no_flip_reaches_the_config():
    sys.path.insert(0, str(ROOT))
    import main

    cfg = main._config_from_args(main._train_parser().parse_args(["data", "--out", "o", "--no-flip"]))
    assert cfg.data.flip is False and cfg.data.augment is True  # augmentation stays on, without mirroring
    assert main._config_from_args(main._train_parser().parse_args(["data", "--out", "o"])).data.flip is True


def test_losses_lists_every_loss_and_miner():
    from trainer.model.losses import LOSSES, MINERS

    res = run("losses")
    assert res.returncode == 0
    for name in list(LOSSES) + list(MINERS):
        assert name in res.stdout, name


def test_a_loss_parameter_of_another_loss_is_refused(tmp_path):
    data = make_folder(tmp_path / "data", n_classes=4, per_class=4)
    res = run("train", str(data), "--out", str(tmp_path / "r"), "--loss", "proxy_anchor", "--margin", "0.2",
              "--pos-margin", "0.1")
    assert res.returncode != 0
    assert "not a parameter of the proxy_anchor loss" in res.stderr


def test_train_evaluate_embed(tmp_path):
    data = make_folder(tmp_path / "data", n_classes=4, per_class=6)
    out = tmp_path / "run"
    res = run("train", str(data), "--out", str(out), "--backbone", "small_cnn", "--no-pretrained", "--epochs", "1",
              "--image-size", "24", "--embedding-dim", "8", "--batch-classes", "2", "--batch-per-class", "3",
              "--batches-per-epoch", "2", "--device", "cpu", "--workers", "0", "--quiet", "--loss", "contrastive")
    assert res.returncode == 0, res.stdout + res.stderr
    # the summary says where the run is, its best epoch by held-out MAP@R, and how to open it
    from trainer.store import RunReader

    history = RunReader(out).metrics_history()
    maps = history["heldout/mean_average_precision_at_r"]
    best = int(history["epoch"][int(np.nanargmax(maps))])
    assert f"run: {out}" in res.stdout, res.stdout
    assert f"best epoch {best} ({np.nanmax(maps):.3f})" in res.stdout, res.stdout
    assert f"python main.py {out}" in res.stdout
    res = run("train", str(data), "--out", str(out))
    assert res.returncode == 1 and "--resume" in res.stderr
    # --resume --dry-run shows the run's stored configuration (not a new run's recipe) and what is left of it;
    # without --epochs the run keeps its own number of epochs (it went on to the default's 10 before)
    res = run("train", str(data), "--out", str(out), "--resume", "--dry-run", "--device", "cpu")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "resuming" in res.stdout and "0 of 1 epochs left" in res.stdout, res.stdout
    assert "data.image_size = 24" in res.stdout and "loss.name = contrastive" in res.stdout, res.stdout
    assert "recipe:" not in res.stdout, res.stdout
    res = run("train", str(data), "--out", str(out), "--resume", "--dry-run", "--epochs", "3", "--device", "cpu")
    assert res.returncode == 0 and "2 of 3 epochs left" in res.stdout, res.stdout + res.stderr
    res = run("train", str(data), "--out", str(out), "--resume", "--device", "cpu", "--workers", "0", "--quiet")
    assert res.returncode == 0, res.stdout + res.stderr
    assert RunReader(out).epochs == [0, 1], RunReader(out).epochs
    # a damaged run: the dry run says what the real resume will leave out
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    last = sorted((damaged / "epochs").glob("*.h5"))[-1]
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    res = run("train", str(data), "--out", str(damaged), "--resume", "--dry-run", "--device", "cpu")
    assert res.returncode == 0 and "[warning] ignored epoch 1" in res.stdout, res.stdout + res.stderr
    res = run("train", str(data), "--out", str(tmp_path / "none"), "--resume", "--dry-run")
    assert res.returncode == 1 and "does not exist" in res.stderr, res.stdout + res.stderr

    res = run("evaluate", str(out), "--json")
    assert res.returncode == 0, res.stderr
    metrics = json.loads(res.stdout)
    for key in ("precision_at_1", "mean_average_precision_at_r", "r_precision", "auc", "eer"):
        assert 0.0 <= metrics[key] <= 1.0, key

    h5 = tmp_path / "emb.h5"
    res = run("embed", str(out), str(data), "--out", str(h5))
    assert res.returncode == 0, res.stderr
    assert "embed" in res.stderr and "24/24" in res.stderr, res.stderr  # its progress bar, not 4 silent minutes
    with h5py.File(h5, "r") as f:
        emb = f["embeddings"][:]
        assert emb.shape == (24, 8) and np.isfinite(emb).all()
        assert len(f["paths"]) == 24 and sorted(set(f["labels"][:])) == [0, 1, 2, 3]

    res = run("evaluate", str(tmp_path / "nope"))
    assert res.returncode == 1 and "nope" in res.stderr


def test_a_preset_fits_its_classes_per_batch_to_a_small_folder(tmp_path):
    """`train --preset quick-cpu` on the demo digits stopped with "C = 8 classes per batch, but only 5 training
    classes"; the form lowered C and the command line did not. Now both do, and the command line says so."""
    data = make_folder(tmp_path / "data", n_classes=6, per_class=6)
    out = tmp_path / "run"
    res = run("train", str(data), "--out", str(out), "--preset", "quick-cpu", "--epochs", "1", "--image-size", "24",
              "--batches-per-epoch", "1", "--device", "cpu", "--workers", "0", "--quiet")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "lowered to 3" in res.stdout, res.stdout
    assert json.loads((out / "manifest.json").read_text())["config"]["data"]["batch_classes"] == 3
    # an explicit -- batch-classes is the user's choice and is refused, not changed
    res = run("train", str(data), "--out", str(tmp_path / "r2"), "--preset", "quick-cpu", "--batch-classes", "8",
              "--dry-run")
    assert res.returncode == 1 and "C = 8" in res.stderr, res.stdout + res.stderr
