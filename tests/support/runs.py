"""Builders the tests share: small class folders, the tiny training config, a trainer run collecting its events,
and a run written directly with RunWriter (clustered embeddings, telemetry with mined tuples)."""

from __future__ import annotations

import os

from pathlib import Path

import numpy as np
from PIL import Image

from trainer.config import TrainConfig
from trainer.model.losses import loss_margin, loss_metric
from trainer.store import SPLIT_HELDOUT, SPLIT_TRAIN, RunWriter, SampleTable

N_CLASSES = 6  # classes 0..2 trained, 3..5 held out
PER_CLASS = 6
DIM = 8
MISLABELLED = 1  # sample id whose embedding sits in another class's cluster (a diagnostics target)


def clustered_run(root: Path, *, loss: str = "triplet", epochs: int = 3, seed: int = 0, params: dict | None = None) -> Path:
    """Images + a run whose spread shrinks with the epoch; telemetry with per-batch counts and mined tuples."""
    rng = np.random.default_rng(seed)
    classes = [f"class_{c}" for c in range(N_CLASSES)]
    data = root / "data"
    paths, labels, split = [], [], []
    for c in range(N_CLASSES):
        (data / classes[c]).mkdir(parents=True)
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        for k in range(PER_CLASS):
            rel = f"{classes[c]}/img_{k}.png"
            Image.new("RGB", (10, 10), colour).save(data / rel)
            paths.append(rel)
            labels.append(c)
            split.append(SPLIT_TRAIN if c < 3 else SPLIT_HELDOUT)
    perm = rng.permutation(len(paths))
    samples = SampleTable(paths=[paths[p] for p in perm], labels=np.array(labels, np.int64)[perm],
                          split=np.array(split, np.int8)[perm], roots=[str(data)],
                          root_index=np.zeros(len(paths), np.int16))
    run_dir = root / "run"
    cfg = {"loss": {"name": loss, "params": params or {}}}
    w = RunWriter.create(run_dir, config=cfg, classes=classes, samples=samples, metric=loss_metric(loss),
                         margin=loss_margin(loss, params))
    centres = 3.0 * rng.normal(size=(N_CLASSES, DIM))
    y = samples.labels
    other = int(np.flatnonzero((samples.split == samples.split[MISLABELLED]) & (y != y[MISLABELLED]))[0])
    for e in range(epochs):
        emb = centres[y] + (1.6 - 0.5 * e) * rng.normal(size=(len(y), DIM))
        emb[MISLABELLED] = centres[y[other]] + 0.05 * rng.normal(size=DIM)
        n_b = 5
        mined_b = np.repeat([3, 4], 6)
        a = rng.integers(0, len(y), 12)
        p = rng.integers(0, len(y), 12)
        n = rng.integers(0, len(y), 12)
        p[[2, 8]] = -1
        n[[5]] = -1
        tel = {"loss": rng.random(n_b), "lr": np.full(n_b, 1e-3), "n_tuples": rng.integers(10, 50, n_b),
               "n_easy": rng.integers(0, 100, n_b), "n_semihard": rng.integers(0, 50, n_b),
               "n_hard": rng.integers(0, 20, n_b), "mean_d_ap": rng.random(n_b), "mean_d_an": rng.random(n_b),
               "mined_batch": mined_b, "mined_anchor": a, "mined_positive": p, "mined_negative": n}
        w.write_epoch(e, emb.astype(np.float32), {"precision_at_1": 0.5}, tel)
    return run_dir


def make_folder(root: Path, n_classes: int = 6, per_class: int = 8, size: int = 24, seed: int = 0) -> Path:
    """Small class folder: each class a distinct colour pattern plus noise, so a network can separate them."""
    rng = np.random.default_rng(seed)
    for c in range(n_classes):
        d = root / f"class_{c}"
        d.mkdir(parents=True)
        base = rng.integers(0, 255, size=(4, 4, 3))
        for i in range(per_class):
            img = np.kron(base, np.ones((size // 4, size // 4, 1))) + rng.normal(0, 25, size=(size, size, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"{i}.png")
    return root


# The device the training tests run on: cpu, or cuda on a GPU machine (bench/gpu_check.sh sets it)
TEST_DEVICE = os.environ.get("EE_TEST_DEVICE", "cpu")


def tiny_config(data_dir: Path, **changes) -> TrainConfig:
    cfg = TrainConfig().replace(**{
        "data.data_dir": str(data_dir), "data.image_size": 24, "data.augment": False, "data.batch_classes": 3,
        "data.batch_per_class": 4, "data.num_workers": 0, "data.holdout_fraction": 0.34,
        "model.backbone": "small_cnn", "model.pretrained": False, "model.embedding_dim": 16,
        "optim.epochs": 2, "optim.batches_per_epoch": 3, "optim.lr": 1e-3,
        "loss.name": "triplet", "loss.miner": "semihard_triplets", "device": TEST_DEVICE, "amp": "off", "seed": 3,
        "keep_checkpoints": "all",  # the tests load the checkpoints of early epochs; the default prunes them
    })
    return cfg.replace(**changes) if changes else cfg


def run_collect(cfg, run_dir, **kwargs) -> list:
    got: list = []
    on_event = kwargs.pop("on_event", None)

    def emit(e):
        got.append(e)
        if on_event:
            on_event(e)

    from trainer.train.engine import Trainer  # torch is heavy: only for tests that train

    Trainer(cfg, run_dir, emit=emit, **kwargs).run()
    return got


def trained_run(root: Path) -> tuple[Path, Path]:
    """A real run of :func:`tiny_config` (epochs 0-2, checkpoints) in ``root / "run"`` and its image folder."""
    from trainer.store import RunReader

    data = make_folder(root / "data")
    run = root / "run"
    events = run_collect(tiny_config(data), run)
    assert RunReader(run).epochs == [0, 1, 2], events[-1]
    return run, data
