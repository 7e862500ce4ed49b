"""Use a trained run: load its model from a checkpoint, embed images or folders, re-evaluate.

Shared by ``main.py embed`` / ``main.py evaluate`` and the app's neighbour panel (querying with an image file).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from trainer.config import TrainConfig
from trainer.errors import TrainingError
from trainer.model.checkpoint import check_checkpoint, load_checkpoint
from trainer.model.device import pick_device
from trainer.store import SPLIT_HELDOUT, RunReader


class RunModel:
    """A run's network restored from one of its checkpoints, ready to embed images (eval mode, no grad)."""

    def __init__(self, run_dir: Path | str, checkpoint: Path | str | None = None, device: str = "auto") -> None:
        from trainer.model.backbones import build_model, default_transforms
        from trainer.model.losses import LOSSES

        self.reader = RunReader(run_dir)
        path = Path(checkpoint) if checkpoint else self.reader.checkpoint_path()
        if path is None:
            raise TrainingError(f"run {run_dir} has no checkpoint yet (no epoch has been committed)")
        state = load_checkpoint(path)
        self.cfg = TrainConfig.from_json(state["config"])
        check_checkpoint(state, path, classes=self.reader.classes)
        self.checkpoint = path
        self.epoch = int(state["epoch"])
        self.device = pick_device(device)
        spec = LOSSES[self.cfg.loss.name]
        self.metric = spec.metric
        model_cfg = self.cfg.model.__class__(**{**self.cfg.model.__dict__, "pretrained": False, "weights_file": None})
        self.model, _ = build_model(model_cfg, normalize=spec.normalized, log=lambda m: None)
        self.model.load_state_dict(state["model"])
        self.model.to(self.device).eval()
        self.transform = default_transforms(self.cfg.data.image_size, augment=False, train=False)

    @torch.no_grad()
    def embed_files(self, files: list[Path], batch_size: int = 128) -> np.ndarray:
        """Embeddings (N, D) float32 of image files (decoded like the training images)."""
        from trainer.data.loader import ImageDataset

        ds = ImageDataset(files, self.transform, load_size=int(self.cfg.data.image_size * 1.15))
        out = []
        for s in range(0, len(ds), batch_size):
            x = torch.stack([ds[i][0] for i in range(s, min(s + batch_size, len(ds)))]).to(self.device)
            out.append(self.model(x).float().cpu())
        if not out:
            return np.zeros((0, self.cfg.model.embedding_dim), dtype=np.float32)
        return torch.cat(out).numpy().astype(np.float32)


def embed_folder(run_dir: Path, image_dir: Path, out: Path, *, checkpoint: str | None = None, device: str = "auto",
                 batch_size: int = 128) -> dict:
    """Embed every usable image below ``image_dir`` into ``out`` (HDF5: embeddings, paths, labels, classes)."""
    from trainer.data.scan import ScanError, scan_folder

    rm = RunModel(run_dir, checkpoint, device)
    image_dir = Path(image_dir)
    labels = None
    classes: list[str] = []
    try:
        scan = scan_folder(image_dir)
        rel = list(scan.paths)
        labels = np.asarray(scan.labels, dtype=np.int64)
        classes = list(scan.classes)
        n_skipped = len(scan.skipped)
    except ScanError:
        # not a class folder: embed the images directly inside it, unlabelled
        from trainer.data.scan import IMAGE_EXTENSIONS

        if not image_dir.is_dir():
            raise
        rel = sorted(p.name for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        n_skipped = 0
    emb = rm.embed_files([image_dir / r for r in rel], batch_size=batch_size)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("embeddings", data=emb)
        f.create_dataset("paths", data=np.array([str(image_dir / r).encode("utf-8", "surrogateescape") for r in rel],
                                                 dtype=object), dtype=h5py.string_dtype("utf-8"))
        if labels is not None:
            f.create_dataset("labels", data=labels)
            f.create_dataset("classes", data=np.array(classes, dtype=object), dtype=h5py.string_dtype("utf-8"))
        f.attrs["run_dir"] = str(Path(run_dir).resolve())
        f.attrs["checkpoint"] = str(rm.checkpoint)
        f.attrs["epoch"] = rm.epoch
        f.attrs["metric"] = rm.metric
    tmp.replace(out)
    return {"n": len(rel), "dim": int(emb.shape[1]), "n_skipped": n_skipped}


def evaluate_run(run_dir: Path, *, data: str | None = None, epoch: int | None = None, device: str = "auto") -> dict:
    """Metrics of a run: of a stored epoch's held-out classes, or of another labelled folder embedded afresh."""
    from trainer.analysis.retrieval import retrieval_metrics
    from trainer.analysis.verification import verification_metrics
    from trainer.model.losses import LOSSES

    reader = RunReader(run_dir)
    metric = LOSSES[TrainConfig.from_dict(reader.config).loss.name].metric
    if data is None:
        if not reader.epochs:
            raise TrainingError(f"run {run_dir} has no committed epoch")
        e = reader.epochs[-1] if epoch is None else epoch
        if e not in reader.epochs:
            raise TrainingError(f"run {run_dir} has no epoch {e} (committed: {reader.epochs})")
        ed = reader.load_epoch(e)
        sel = reader.samples.split == SPLIT_HELDOUT
        emb, labels = ed.embeddings[sel], reader.samples.labels[sel]
        source = f"epoch {e}, held-out classes"
    else:
        from trainer.data.scan import scan_folder

        rm = RunModel(run_dir, reader.checkpoint_path(epoch) if epoch is not None else None, device)
        scan = scan_folder(data)
        emb = rm.embed_files([scan.abspath(i) for i in range(len(scan.paths))])
        labels = np.asarray(scan.labels)
        source = f"{data} with the checkpoint of epoch {rm.epoch}"
    out: dict = {"source": source, "n_images": int(len(labels)), "n_classes": int(len(np.unique(labels)))}
    out.update({k: float(v) for k, v in retrieval_metrics(emb, labels, metric=metric).items()})
    out.update({k: float(v) for k, v in verification_metrics(emb, labels, metric=metric).items()})
    return out
