"""The training loop: events, commits, stop, NaN guard, resume after a kill, checkpoint refusal."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer import events as ev
from trainer.config import TrainConfig
from trainer.errors import TrainingError
from trainer.model.checkpoint import check_checkpoint, load_checkpoint
from trainer.model.losses import loss_margin, loss_metric
from trainer.store import RunLock, RunReader, run_in_training
from tests.support import ROOT
from tests.support.runs import make_folder, run_collect, tiny_config









@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("data"))


def test_a_run_commits_every_epoch_with_metrics_and_telemetry(folder, tmp_path):
    events = run_collect(tiny_config(folder), tmp_path / "run")
    failed = [e for e in events if isinstance(e, ev.Failed)]
    assert not failed, failed[0].detail
    kinds = [type(e).__name__ for e in events if not isinstance(e, ev.Log)]
    assert kinds[0] == "Started" and kinds[-1] == "Stopped"
    assert [e.epoch for e in events if isinstance(e, ev.SnapshotReady)] == [0, 1, 2]
    batches = [e for e in events if isinstance(e, ev.BatchDone)]
    assert len(batches) == 2 * 3
    for b in batches:
        assert b.n_easy + b.n_semihard + b.n_hard > 0 and np.isfinite(b.loss)
    stopped = events[-1]
    assert isinstance(stopped, ev.Stopped) and stopped.reason == "finished" and stopped.epoch == 2

    reader = RunReader(tmp_path / "run")
    assert reader.epochs == [0, 1, 2]
    cfg = tiny_config(folder)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())  # recorded at creation, not guessed
    assert (manifest["metric"], manifest["margin"]) == (loss_metric(cfg.loss.name),
                                                        loss_margin(cfg.loss.name, cfg.loss.params))
    e1 = reader.load_epoch(1)
    assert e1.embeddings.shape == (48, 16) and e1.embeddings.dtype == np.float32
    for key in ("heldout/precision_at_1", "heldout/mean_average_precision_at_r", "heldout/auc", "train/r_precision",
                "train_loss"):
        assert key in e1.metrics, key
    assert len(e1.telemetry["loss"]) == 3
    assert (e1.telemetry["n_easy"] + e1.telemetry["n_semihard"] + e1.telemetry["n_hard"] > 0).all()
    # the mined tuples are global sample ids of training images
    train_ids = np.flatnonzero(reader.samples.split == 0)
    anchors = e1.telemetry["mined_anchor"]
    assert len(anchors) > 0 and np.isin(anchors, train_ids).all()
    # held-out classes never appear in training batches
    assert not np.isin(e1.telemetry["mined_negative"][e1.telemetry["mined_negative"] >= 0],
                       np.flatnonzero(reader.samples.split == 1)).any()
    assert reader.checkpoint_path(2) is not None
    # the telemetry alone (what the training view redraws for an opened run) equals the epoch's
    for k, v in reader.telemetry(1).items():
        np.testing.assert_array_equal(v, e1.telemetry[k])
    assert run_in_training(tmp_path / "run") is None  # the finished trainer released its lock


def test_checkpoints_kept_are_the_last_and_the_best_against_a_brute_force_choice():
    from trainer.train.handlers import BEST_BY, checkpoints_to_keep

    rng = np.random.default_rng(4)
    for _ in range(200):
        n = int(rng.integers(1, 7))
        held = sorted(rng.choice(10, size=n, replace=False).tolist())
        values = rng.choice([0.1, 0.2, 0.3, np.nan], size=10)
        metrics = {e: ({BEST_BY: float(values[e])} if rng.random() < 0.8 else {}) for e in range(10)}
        want = {max(held)}
        scored = [e for e in held if not np.isnan(metrics[e].get(BEST_BY, np.nan))]
        if scored:
            top = max(metrics[e][BEST_BY] for e in scored)
            want.add(min(e for e in scored if metrics[e][BEST_BY] == top))  # the first of equals
        assert checkpoints_to_keep(metrics, held) == want, (held, metrics)
    assert checkpoints_to_keep({}, []) == set()


def test_by_default_a_run_keeps_the_last_and_the_best_checkpoint_and_no_lock_file(folder, tmp_path):
    """Issue 15 item 22: a 135 MB checkpoint per epoch was kept, and trainer.lock stayed after a clean exit."""
    run = tmp_path / "run"
    cfg = tiny_config(folder, **{"optim.epochs": 3, "keep_checkpoints": "last_best"})
    assert not [e for e in run_collect(cfg, run) if isinstance(e, ev.Failed)]
    reader = RunReader(run)
    history = reader.metrics_history()
    maps = history["heldout/mean_average_precision_at_r"]
    best = int(history["epoch"][int(np.nanargmax(maps))])
    assert reader.checkpoints == sorted({best, 3})
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [f"epoch_{e:04d}.pt" for e in sorted({best, 3})]
    assert not (run / "trainer.lock").exists()
    # it continues from the last checkpoint as before
    events = run_collect(tiny_config(folder, **{"optim.epochs": 4, "keep_checkpoints": "last_best"}), run,
                         resume=True)
    assert not [e for e in events if isinstance(e, ev.Failed)]
    assert RunReader(run).epochs == [0, 1, 2, 3, 4] and 4 in RunReader(run).checkpoints
    assert not (run / "trainer.lock").exists()


def test_a_run_being_trained_is_not_resumed_by_a_second_trainer(folder, tmp_path):
    run = tmp_path / "run"
    assert not [e for e in run_collect(tiny_config(folder, **{"optim.epochs": 1}), run) if isinstance(e, ev.Failed)]
    files_before = sorted(p.name for p in (run / "epochs").iterdir())
    lock = RunLock(run).acquire()  # as the command line would hold it while training
    try:
        assert run_in_training(run) == f"process {os.getpid()} on {socket.gethostname()}"
        events = run_collect(tiny_config(folder, **{"optim.epochs": 2}), run, resume=True)
        failed = [e for e in events if isinstance(e, ev.Failed)]
        assert failed and "is being trained by process" in failed[0].message and str(run) in failed[0].message
        assert sorted(p.name for p in (run / "epochs").iterdir()) == files_before  # nothing touched
    finally:
        lock.release()
    assert run_in_training(run) is None
    events = run_collect(tiny_config(folder, **{"optim.epochs": 2}), run, resume=True)
    assert not [e for e in events if isinstance(e, ev.Failed)]
    assert RunReader(run).epochs == [0, 1, 2]


def test_stop_takes_effect_within_one_batch(folder, tmp_path):
    stop = threading.Event()

    def on_event(e):
        if isinstance(e, ev.BatchDone) and e.epoch == 1 and e.batch == 0:
            stop.set()

    cfg = tiny_config(folder, **{"optim.batches_per_epoch": 6})
    events = run_collect(cfg, tmp_path / "run", stop=stop, on_event=on_event)
    batches = [e for e in events if isinstance(e, ev.BatchDone)]
    assert len(batches) == 1
    assert isinstance(events[-1], ev.Stopped) and events[-1].reason == "user" and events[-1].epoch == 0
    assert RunReader(tmp_path / "run").epochs == [0]


def test_pause_holds_the_loop_until_released(folder, tmp_path):
    pause = threading.Event()
    seen = []

    def on_event(e):
        seen.append(e)
        if isinstance(e, ev.BatchDone) and e.epoch == 1 and e.batch == 0:
            pause.set()
            threading.Timer(0.3, pause.clear).start()

    t0 = time.perf_counter()
    run_collect(tiny_config(folder, **{"optim.epochs": 1}), tmp_path / "run", pause=pause, on_event=on_event)
    assert time.perf_counter() - t0 >= 0.3
    flags = [e.paused for e in seen if isinstance(e, ev.Paused)]
    assert flags == [True, False]


def test_nan_loss_stops_the_run_and_the_epoch_is_not_committed(folder, tmp_path, monkeypatch):
    import trainer.model.losses as losses

    real = losses.build_loss

    def nan_loss(*args, **kwargs):
        inner = real(*args, **kwargs)

        class NanLoss(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, emb, labels, tuples=None):
                return self.inner(emb, labels, tuples) * float("nan")

        return NanLoss()

    monkeypatch.setattr(losses, "build_loss", nan_loss)
    events = run_collect(tiny_config(folder), tmp_path / "run")
    failed = [e for e in events if isinstance(e, ev.Failed)]
    assert len(failed) == 1 and "nan" in failed[0].message.lower() and "epoch 1" in failed[0].message
    assert RunReader(tmp_path / "run").epochs == [0]


def test_head_only_caches_backbone_features_in_the_run(folder, tmp_path):
    cfg = tiny_config(folder, **{"model.head_only": True})
    events = run_collect(cfg, tmp_path / "run")
    assert not [e for e in events if isinstance(e, ev.Failed)]
    reader = RunReader(tmp_path / "run")
    feats = reader.features()
    assert feats is not None and feats.shape[0] == 48
    # the backbone stays frozen: features of epoch 2 equal those cached before training
    assert reader.epochs == [0, 1, 2]


def _cli_train(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "main.py"), "train", str(data), "--out", str(out), "--backbone", "small_cnn",
           "--no-pretrained", "--image-size", "24", "--embedding-dim", "16", "--batch-classes", "3",
           "--batch-per-class", "4", "--batches-per-epoch", "3", "--lr", "1e-3", "--loss", "triplet", "--miner",
           "semihard_triplets", "--device", "cpu", "--amp", "off", "--seed", "3", "--workers", "0", "--no-augment",
           "--holdout-fraction", "0.34", "--quiet", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)


def test_resume_after_a_kill_equals_an_uninterrupted_run(folder, tmp_path):
    """Kill -9 once epoch 2 is committed, resume, and epoch 3 equals epoch 3 of a run never interrupted."""
    full = _cli_train(folder, tmp_path / "full", "--epochs", "3")
    out, _ = full.communicate(timeout=240)
    assert full.returncode == 0, out

    killed = _cli_train(folder, tmp_path / "killed", "--epochs", "3")
    manifest = tmp_path / "killed" / "manifest.json"
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            if 2 in [int(e["epoch"]) for e in json.loads(manifest.read_text())["epochs"]]:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=30)
    assert RunReader(tmp_path / "killed").epochs[-1] >= 2

    resumed = _cli_train(folder, tmp_path / "killed", "--epochs", "3", "--resume")
    out, _ = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, out
    a, b = RunReader(tmp_path / "full"), RunReader(tmp_path / "killed")
    assert b.epochs == [0, 1, 2, 3]
    np.testing.assert_allclose(b.load_epoch(3).embeddings, a.load_epoch(3).embeddings, rtol=0, atol=1e-5)


def test_foreign_and_mismatched_checkpoints_are_refused(folder, tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(TrainingError, match="not an Embedding Explorer checkpoint"):
        load_checkpoint(foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(TrainingError, match="cannot load safely|not a checkpoint"):
        load_checkpoint(garbage)

    run_collect(tiny_config(folder, **{"optim.epochs": 1, "optim.batches_per_epoch": 1}), tmp_path / "run")
    path = RunReader(tmp_path / "run").checkpoint_path(0)
    state = load_checkpoint(path)
    check_checkpoint(state, path, classes=state["classes"], dim=16)
    with pytest.raises(TrainingError, match="other classes"):
        check_checkpoint(state, path, classes=["a", "b"])
    with pytest.raises(TrainingError, match="embedding dimension"):
        check_checkpoint(state, path, dim=32)




def test_head_lr_multiplier_follows_the_weights_as_loaded_not_as_asked_for():
    from trainer.train.optim import head_lr_multiplier

    cfg = TrainConfig()
    assert head_lr_multiplier(cfg, trained_weights=True) == 10.0
    # ImageNet asked for (the default) but the download failed: the network is random, so 1x
    assert cfg.model.pretrained and head_lr_multiplier(cfg, trained_weights=False) == 1.0
    assert head_lr_multiplier(cfg.replace(**{"optim.head_lr_mult": 3.0}), trained_weights=True) == 3.0
    assert TrainConfig.from_json(cfg.replace(**{"optim.head_lr_mult": 3.0}).to_json()).optim.head_lr_mult == 3.0


def test_head_and_loss_learning_rates_reach_their_optimizer_groups(folder, tmp_path):
    cfg = tiny_config(folder, **{"optim.epochs": 1, "optim.batches_per_epoch": 1, "optim.lr": 2e-4, "optim.loss_lr": 0.05,
                                 "optim.head_lr_mult": 4.0, "loss.name": "proxy_anchor", "loss.miner": "none"})
    events = run_collect(cfg, tmp_path / "run")
    assert not [e for e in events if isinstance(e, ev.Failed)]
    state = load_checkpoint(RunReader(tmp_path / "run").checkpoint_path(0))
    groups = {g["name"]: g for g in state["optimizer"]["param_groups"]}
    assert groups["head"]["initial_lr"] == pytest.approx(8e-4)
    assert groups["backbone"]["initial_lr"] == pytest.approx(2e-4)
    assert groups["loss"]["initial_lr"] == pytest.approx(0.05)
    assert groups["loss"]["weight_decay"] == 0.0  # proxies are not pulled to the origin
    assert any("learning rates: head 0.0008, backbone 0.0002, loss 0.05" in e.message
               for e in events if isinstance(e, ev.Log))
    # default on a network trained from scratch: the head at the backbone's rate
    run_collect(tiny_config(folder, **{"optim.epochs": 1, "optim.batches_per_epoch": 1}), tmp_path / "run2")
    groups = {g["name"]: g for g in load_checkpoint(RunReader(tmp_path / "run2").checkpoint_path(0))
              ["optimizer"]["param_groups"]}
    assert groups["head"]["initial_lr"] == groups["backbone"]["initial_lr"] == pytest.approx(1e-3)


def test_a_bad_head_lr_multiplier_fails_with_its_name(folder, tmp_path):
    events = run_collect(tiny_config(folder, **{"optim.head_lr_mult": 0.0}), tmp_path / "run")
    failed = [e for e in events if isinstance(e, ev.Failed)]
    assert failed and "head rate multiplier (head-lr-mult)" in failed[0].message


def test_the_flip_option_reaches_the_training_transforms(folder, tmp_path, monkeypatch):
    from trainer.model import backbones as models

    made = []
    real = models.default_transforms

    def spy(*args, **kwargs):
        made.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(models, "default_transforms", spy)
    for flip in (True, False):
        made.clear()
        cfg = tiny_config(folder, **{"optim.epochs": 1, "optim.batches_per_epoch": 1, "data.augment": True, "data.flip": flip})
        assert not [e for e in run_collect(cfg, tmp_path / f"run{flip}") if isinstance(e, ev.Failed)]
        train = [kw for kw in made if kw.get("train")]
        assert train and all(kw.get("flip") is flip and kw.get("augment") is True for kw in train)
    assert TrainConfig.from_dict({"data": {"augment": True}}).data.flip is True  # runs saved before the option
