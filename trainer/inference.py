"""Use a trained run: load its model from a checkpoint, embed images or folders, re-evaluate.

Shared by ``main.py embed`` / ``main.py evaluate`` and the app's neighbour panel (querying with an image file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import torch

from trainer.config import TrainConfig
from trainer.errors import TrainingError, short_reason
from trainer.model.checkpoint import check_checkpoint, load_checkpoint
from trainer.model.device import pick_device
from trainer.store import SPLIT_HELDOUT, RunError, RunReader, refuse_output_in_run


class RunModel:
    """A run's network restored from one of its checkpoints, ready to embed images (eval mode, no grad)."""

    def __init__(self, run_dir: Path | str, checkpoint: Path | str | None = None, device: str = "auto") -> None:
        from trainer.model.backbones import build_model, default_transforms
        from trainer.model.losses import LOSSES

        self.reader = RunReader(run_dir)
        path = self.reader.verified_checkpoint_file(checkpoint) if checkpoint else self.reader.verified_checkpoint()
        if path is None:
            raise TrainingError(f"run {run_dir} has no checkpoint yet (no epoch has been committed)")
        state = load_checkpoint(path)
        missing = [k for k in ("config", "epoch", "model", "classes") if k not in state]
        if missing:
            raise TrainingError(f"{path} is not a usable checkpoint: it lacks {', '.join(missing)}")
        try:
            self.cfg = TrainConfig.from_json(state["config"])
        except (ValueError, TypeError, KeyError) as exc:
            raise TrainingError(f"{path} holds a configuration this program cannot read: {exc}") from None
        check_checkpoint(state, path, classes=self.reader.classes, dim=_run_dim(self.reader))
        self.checkpoint = path
        self.epoch = int(state["epoch"])
        self.device = pick_device(device)
        spec = LOSSES.get(self.cfg.loss.name)
        if spec is None:
            raise TrainingError(f"{path} was trained with the loss {self.cfg.loss.name!r}, which this program does "
                                f"not know")
        self.metric = self.reader.metric
        model_cfg = self.cfg.model.__class__(**{**self.cfg.model.__dict__, "pretrained": False, "weights_file": None})
        self.model, _ = build_model(model_cfg, normalize=spec.normalized, log=lambda m: None)
        try:
            self.model.load_state_dict(state["model"])
        except (RuntimeError, TypeError, KeyError) as exc:
            raise TrainingError(f"{path} does not fit the run's network ({short_reason(exc)})") from None
        self.model.to(self.device).eval()
        self.transform = default_transforms(self.cfg.data.image_size, augment=False, train=False)

    @torch.no_grad()
    def embed_files(self, files: list[Path], batch_size: int = 128,
                    progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Embeddings (N, D) float32 of image files (decoded like the training images); ``progress(done, total)``
        after each batch."""
        from trainer.data.loader import ImageDataset

        ds = ImageDataset(files, self.transform, load_size=int(self.cfg.data.image_size * 1.15))
        out = []
        for s in range(0, len(ds), batch_size):
            x = torch.stack([ds[i][0] for i in range(s, min(s + batch_size, len(ds)))]).to(self.device)
            out.append(self.model(x).float().cpu())
            if progress is not None:
                progress(min(s + batch_size, len(ds)), len(ds))
        if not out:
            return np.zeros((0, self.cfg.model.embedding_dim), dtype=np.float32)
        return torch.cat(out).numpy().astype(np.float32)


def embed_folder(run_dir: Path, image_dir: Path, out: Path, *, checkpoint: str | None = None, device: str = "auto",
                 batch_size: int = 128, progress: Callable[[int, int], None] | None = None,
                 scan_progress: Callable[[int, int], None] | None = None) -> dict:
    """Embed every usable image below ``image_dir`` into ``out`` (HDF5: embeddings, paths, labels, classes);
    ``scan_progress`` / ``progress`` ``(done, total)`` report the folder scan and the embedding."""
    from trainer.data.scan import ScanError, scan_folder

    out = Path(out)
    refuse_output_in_run(out, Path(run_dir))
    rm = RunModel(run_dir, checkpoint, device)
    image_dir = Path(image_dir)
    labels = None
    classes: list[str] = []
    try:
        scan = scan_folder(image_dir, progress=scan_progress)
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
    emb = rm.embed_files([image_dir / r for r in rel], batch_size=batch_size, progress=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")

    def encoded(names: list[str]) -> np.ndarray:  # file and folder names that are not UTF-8 keep their bytes
        return np.array([n.encode("utf-8", "surrogateescape") for n in names], dtype=object)

    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("embeddings", data=emb)
            f.create_dataset("paths", data=encoded([str(image_dir / r) for r in rel]), dtype=h5py.string_dtype())
            if labels is not None:
                f.create_dataset("labels", data=labels)
                f.create_dataset("classes", data=encoded(classes), dtype=h5py.string_dtype())
            f.attrs["run_dir"] = str(Path(run_dir).resolve()).encode("utf-8", "surrogateescape")
            f.attrs["checkpoint"] = str(rm.checkpoint).encode("utf-8", "surrogateescape")
            f.attrs["epoch"] = rm.epoch
            f.attrs["metric"] = rm.metric
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"n": len(rel), "dim": int(emb.shape[1]), "n_skipped": n_skipped, "embeddings": emb,
            "paths": [str(image_dir / r) for r in rel],
            "labels": [classes[int(c)] for c in labels] if labels is not None else [""] * len(rel)}


def evaluate_run(run_dir: Path, *, data: str | None = None, epoch: int | None = None, device: str = "auto") -> dict:
    """Metrics of a run: of a stored epoch's held-out classes, or of another labelled folder embedded afresh."""
    from trainer.analysis.retrieval import retrieval_metrics
    from trainer.analysis.verification import verification_metrics

    reader = RunReader(run_dir)
    metric = reader.metric
    notes = list(reader.messages)
    if data is None:
        if not reader.epochs:
            raise TrainingError(f"run {run_dir} has no usable epoch" + (f" ({'; '.join(notes)})" if notes else ""))
        listed = reader.listed_epochs
        e = reader.epochs[-1] if epoch is None else epoch
        if e not in reader.epochs:
            why = "it is damaged" if e in listed else f"committed: {reader.epochs}"
            raise TrainingError(f"run {run_dir} has no usable epoch {e} ({why})")
        if epoch is None and listed and e != listed[-1]:
            notes.append(f"the last committed epoch {listed[-1]} is damaged: evaluated epoch {e} instead")
        while True:
            try:
                ed = reader.load_epoch(e)
                break
            except RunError as exc:
                earlier = [x for x in reader.epochs if x < e]
                if epoch is not None or not earlier:
                    raise
                notes.append(f"{exc}: evaluated epoch {earlier[-1]} instead")
                e = earlier[-1]
        sel = reader.samples.split == SPLIT_HELDOUT
        emb, labels = ed.embeddings[sel], reader.samples.labels[sel]
        source = f"epoch {e}, held-out classes"
    else:
        from trainer.data.scan import scan_folder

        rm = RunModel(run_dir, reader.verified_checkpoint(epoch) if epoch is not None else None, device)
        scan = scan_folder(data)
        emb = rm.embed_files([scan.abspath(i) for i in range(len(scan.paths))])
        labels = np.asarray(scan.labels)
        source = f"{data} with the checkpoint of epoch {rm.epoch}"
    out: dict = {"source": source, "n_images": int(len(labels)), "n_classes": int(len(np.unique(labels)))}
    if notes:
        out["warnings"] = notes
    out.update({k: float(v) for k, v in retrieval_metrics(emb, labels, metric=metric).items()})
    out.update({k: float(v) for k, v in verification_metrics(emb, labels, metric=metric).items()})
    return out


def _run_dim(reader: RunReader) -> int | None:
    """The embedding dimension the run was trained with (from its config), None when it does not say."""
    try:
        return int(reader.config["model"]["embedding_dim"])
    except (KeyError, TypeError, ValueError):
        return None
