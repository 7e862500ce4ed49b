"""Seeds, the image dataset and the C x K class-balanced batch sampler.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed for one epoch of one run."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class ClassBalancedBatchSampler(Sampler[list[int]]):
    """Batches of ``classes_per_batch`` classes x ``per_class`` images, reproducible from (seed, epoch).

    Classes with fewer than ``per_class`` images are sampled with replacement; classes with a single image are
    never drawn (they have no positive pair). Call :meth:`set_epoch` before iterating, as with
    ``DistributedSampler``; ``rank``/``world_size`` give each process its own slice of every global batch.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        classes_per_batch: int,
        per_class: int,
        *,
        batches_per_epoch: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if classes_per_batch < 2:
            raise ValueError("a batch needs at least 2 classes (C >= 2)")
        if per_class < 2:
            raise ValueError("a batch needs at least 2 images per class (K >= 2) to have positive pairs")
        self.per_class = int(per_class)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0
        uniq, counts = np.unique(labels, return_counts=True)
        usable = uniq[counts >= 2]
        if len(usable) < 2:
            raise ValueError("at least 2 classes with 2 or more training images are needed to form batches")
        self.classes_per_batch = int(min(classes_per_batch, len(usable)))
        self.index_by_class = {int(c): np.flatnonzero(labels == c) for c in usable}
        self.usable = usable
        batch = self.classes_per_batch * self.per_class
        if batches_per_epoch is None:
            batches_per_epoch = max(1, int(counts[counts >= 2].sum()) // batch)
        if batches_per_epoch % world_size:
            batches_per_epoch += world_size - batches_per_epoch % world_size
        self.batches_per_epoch = int(batches_per_epoch)

    @property
    def batch_size(self) -> int:
        return self.classes_per_batch * self.per_class

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def global_batches(self) -> list[np.ndarray]:
        """Every global batch of the current epoch (all ranks), as arrays of dataset indices."""
        rng = np.random.default_rng(epoch_seed(self.seed, self.epoch))
        out = []
        class_order = np.empty(0, dtype=np.int64)
        for _ in range(self.batches_per_epoch):
            if len(class_order) < self.classes_per_batch:
                class_order = np.concatenate([class_order, rng.permutation(self.usable)])
            chosen, class_order = class_order[: self.classes_per_batch], class_order[self.classes_per_batch :]
            # a class may appear twice across the boundary of two permutations; replace duplicates
            chosen = _unique_fill(chosen, self.usable, self.classes_per_batch, rng)
            parts = []
            for c in chosen:
                idx = self.index_by_class[int(c)]
                replace = len(idx) < self.per_class
                parts.append(rng.choice(idx, size=self.per_class, replace=replace))
            out.append(np.concatenate(parts))
        return out

    def __iter__(self) -> Iterator[list[int]]:
        for b in self.global_batches():
            if self.world_size == 1:
                yield b.tolist()
            else:
                # each rank takes every world_size-th class block so that labels stay balanced per rank
                yield b.reshape(self.classes_per_batch, self.per_class)[self.rank :: self.world_size].ravel().tolist()

    def __len__(self) -> int:
        return self.batches_per_epoch

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])


def _unique_fill(chosen: np.ndarray, pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    uniq = list(dict.fromkeys(int(c) for c in chosen))
    if len(uniq) < n:
        rest = [int(c) for c in rng.permutation(pool) if int(c) not in set(uniq)]
        uniq += rest[: n - len(uniq)]
    return np.asarray(uniq, dtype=np.int64)


class ImageDataset(Dataset):
    """Images from disk (through :func:`trainer.data.images.load_image`) with a transform; returns (tensor, index).

    With ``cache_decoded`` the decoded, down-scaled images are kept in memory after their first use: for small
    data sets decoding, not the model, is what a CPU spends its time on.
    """

    def __init__(
        self,
        files: Sequence[Path | str],
        transform: Callable | None,
        *,
        load_size: int | None = None,
        cache_decoded: bool = False,
    ) -> None:
        self.files = [Path(f) for f in files]
        self.transform = transform
        self.load_size = load_size
        self.cache: dict[int, object] | None = {} if cache_decoded else None

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, i: int):
        from trainer.data.images import load_image

        if self.cache is not None and i in self.cache:
            return self.cache[i]
        img = load_image(self.files[i], draft_size=self.load_size)
        if self.load_size is not None and min(img.size) > self.load_size:
            scale = self.load_size / min(img.size)
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
        if self.cache is not None:
            self.cache[i] = img
        return img

    def preload(self, workers: int | None = None, progress: Callable[[int, int], None] | None = None) -> None:
        """Decode every image once into the in-memory cache (threads: PIL releases the GIL while decoding)."""
        if self.cache is None:
            self.cache = {}
        n = len(self.files)
        with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
            for done, _ in enumerate(pool.map(self._load, range(n)), 1):
                if progress is not None and (done == n or done % 256 == 0):
                    progress(done, n)

    def __getitem__(self, i: int):
        img = self._load(i)
        x = self.transform(img) if self.transform is not None else img
        return x, i


def sample_files(samples) -> list[Path]:
    """Absolute paths of a :class:`trainer.store.SampleTable`'s samples."""
    roots = [Path(r) for r in samples.roots]
    return [roots[int(ri)] / p for p, ri in zip(samples.paths, samples.root_index)]
