"""Training-loop benchmarks (issue #3 item 8).

(a) our loop's images/s (telemetry on: per-batch triplet census, mined-tuple records, events) against a plain
    PyTorch + pytorch-metric-learning loop with the same model, batches, miner and loss, measured in one run;
(b) data loading: decode + transform images/s against the model's training images/s;
(c) per-epoch evaluation time (retrieval + verification metrics) at 10,000 and 100,000 embeddings.

    python -m bench.train [--quick] [--backbone small_cnn] [--image-size 64] [--device cuda --amp auto]
    python -m bench.train --device cuda --backbone resnet50 --image-size 224 --batch-classes 16 --batch-per-class 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from trainer import events as ev
from trainer.config import TrainConfig
from trainer.data.loader import ClassBalancedBatchSampler, ImageDataset, epoch_seed
from trainer.train.engine import Trainer
from trainer.model.losses import LOSSES, build_loss, build_miner
from trainer.model.backbones import build_model, default_transforms


def make_jpegs(root: Path, n_classes: int, per_class: int, size: int = 96) -> Path:
    rng = np.random.default_rng(0)
    for c in range(n_classes):
        d = root / f"c{c:03d}"
        d.mkdir(parents=True)
        base = rng.integers(0, 255, size=(6, 6, 3))
        for i in range(per_class):
            img = np.kron(base, np.ones((size // 6, size // 6, 1))) + rng.normal(0, 30, size=(size, size, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"{i}.jpg", quality=90)
    return root


def ours(cfg: TrainConfig, run_dir: Path) -> float:
    stamps: list[float] = []
    n_img = []

    def emit(e):
        if isinstance(e, ev.BatchDone) and e.epoch == 1:
            stamps.append(time.perf_counter())
            n_img.append(cfg.data.batch_classes * cfg.data.batch_per_class)
        if isinstance(e, ev.Failed):
            raise SystemExit(e.message + e.detail)

    Trainer(cfg, run_dir, emit=emit).run()
    return sum(n_img[1:]) / (stamps[-1] - stamps[0])


def plain(cfg: TrainConfig, files, labels, train_idx) -> float:
    """The loop a user would write with PyTorch + PML: same model, sampler, miner, loss, optimiser, data."""
    from trainer.model.device import pick_amp, pick_device

    spec = LOSSES[cfg.loss.name]
    device = pick_device(cfg.device)
    amp = pick_amp(cfg.amp, device)
    model, _ = build_model(cfg.model, normalize=spec.normalized, log=lambda m: None)
    model.to(device)
    loss_fn = build_loss(cfg.loss.name, {}, embedding_dim=cfg.model.embedding_dim, num_classes=int(labels.max()) + 1)
    loss_fn.to(device)
    miner = build_miner(cfg.loss.miner, {}, metric=spec.metric)
    opt = torch.optim.AdamW(list(model.parameters()) + list(loss_fn.parameters()), lr=cfg.optim.lr)
    ds = ImageDataset(files, default_transforms(cfg.data.image_size, augment=cfg.data.augment, train=True),
                      load_size=int(cfg.data.image_size * 1.15), cache_decoded=True)
    ds.preload()
    sampler = ClassBalancedBatchSampler(labels[train_idx], cfg.data.batch_classes, cfg.data.batch_per_class,
                                        batches_per_epoch=cfg.optim.batches_per_epoch, seed=cfg.seed)
    sampler.set_epoch(1)

    class Global:
        def __iter__(self):
            for b in sampler:
                yield train_idx[np.asarray(b)].tolist()

        def __len__(self):
            return len(sampler)

    loader = torch.utils.data.DataLoader(ds, batch_sampler=Global(), num_workers=0, pin_memory=device.type == "cuda",
                                         generator=torch.Generator().manual_seed(epoch_seed(cfg.seed, 1)))
    y_all = torch.as_tensor(labels).to(device)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 and device.type == "cuda" else None
    model.train()
    stamps = []
    n = []
    for x, ids in loader:
        y = y_all[ids.to(device)]
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            emb = model(x.to(device, non_blocking=True))
        emb = emb.float()
        loss = loss_fn(emb, y, miner(emb, y)) if miner is not None else loss_fn(emb, y)
        opt.zero_grad()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        loss.item()
        stamps.append(time.perf_counter())
        n.append(len(ids))
    return sum(n[1:]) / (stamps[-1] - stamps[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--backbone", default="small_cnn")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--amp", default="off", help="off, auto, fp16 or bf16")
    p.add_argument("--batch-classes", type=int, default=8)
    p.add_argument("--batch-per-class", type=int, default=4)
    args = p.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(2)
    n_classes, per_class = (10, 20) if args.quick else (20, 40)
    batches = 10 if args.quick else 25
    with tempfile.TemporaryDirectory() as tmp:
        root = make_jpegs(Path(tmp) / "data", n_classes, per_class)
        cfg = TrainConfig().replace(**{
            "data.data_dir": str(root), "data.image_size": args.image_size, "data.augment": True,
            "data.batch_classes": args.batch_classes, "data.batch_per_class": args.batch_per_class,
            "data.num_workers": 0,
            "data.holdout_fraction": 0.2, "model.backbone": args.backbone, "model.pretrained": False,
            "model.embedding_dim": 64, "optim.epochs": 1, "optim.batches_per_epoch": batches,
            "loss.name": "triplet", "loss.miner": "semihard_triplets", "device": args.device, "amp": args.amp})
        from trainer.data.split import class_disjoint_split
        from trainer.data.scan import scan_folder
        from trainer.store import SPLIT_TRAIN

        scan = scan_folder(root)
        labels = np.asarray(scan.labels)
        split = class_disjoint_split(labels, scan.classes, holdout_fraction=0.2, seed=cfg.seed)
        train_idx = np.flatnonzero(split == SPLIT_TRAIN)
        files = [scan.abspath(i) for i in range(len(scan.paths))]
        rows = []
        for r in range(args.repeats):  # interleave to share the machine's noise fairly
            a = ours(cfg, Path(tmp) / f"run{r}")
            b = plain(cfg, files, labels, train_idx)
            rows.append((a, b))
            print(f"  repeat {r}: ours {a:7.1f} img/s   plain PyTorch+PML {b:7.1f} img/s   ratio {a / b:.3f}")
        a, b = np.median([r[0] for r in rows]), np.median([r[1] for r in rows])
        print(f"(a) {args.backbone} @ {args.image_size}px on {args.device} (amp {args.amp}), triplet + semi-hard "
              f"miner, {args.batch_classes}x{args.batch_per_class} batches: ours {a:.1f} img/s, "
              f"plain loop {b:.1f} img/s -> ratio {a / b:.3f} (target >= 0.95)")

        # (b) data loading vs model
        ds = ImageDataset(files, default_transforms(args.image_size, augment=True, train=True),
                          load_size=int(args.image_size * 1.15))
        n = min(len(ds), 400)
        t0 = time.perf_counter()
        for i in range(n):
            ds[i]
        cold = n / (time.perf_counter() - t0)
        ds.cache = {}
        for i in range(n):
            ds[i]
        t0 = time.perf_counter()
        for i in range(n):
            ds[i]
        cached = n / (time.perf_counter() - t0)
        loader = torch.utils.data.DataLoader(ds, batch_size=32, num_workers=2)
        ds.cache = None
        t0 = time.perf_counter()
        m = 0
        for x, _ in loader:
            m += len(x)
            if m >= n:
                break
        workers2 = m / (time.perf_counter() - t0)
        print(f"(b) decode+transform: {cold:.0f} img/s in one process, {workers2:.0f} img/s with 2 workers, "
              f"{cached:.0f} img/s from the decoded-image cache; model training {a:.0f} img/s -> loading keeps "
              f"ahead by {max(cold, workers2, cached) / a:.1f}x")

    # (c) evaluation per epoch
    from trainer.analysis.retrieval import retrieval_metrics
    from trainer.analysis.verification import verification_metrics

    for n in ([2000, 10000] if args.quick else [10000, 100000]):
        rng = np.random.default_rng(0)
        c = n // 20
        centers = rng.normal(size=(c, 128)).astype(np.float32)
        lab = rng.integers(0, c, n)
        emb = centers[lab] + 0.7 * rng.normal(size=(n, 128)).astype(np.float32)
        t0 = time.perf_counter()
        retrieval_metrics(emb, lab, metric="cosine")
        t1 = time.perf_counter()
        verification_metrics(emb, lab, metric="cosine")
        t2 = time.perf_counter()
        print(f"(c) N={n:>7}: retrieval metrics {t1 - t0:.2f} s, verification metrics {t2 - t1:.2f} s")


if __name__ == "__main__":
    main()
