"""The class-disjoint split: held-out classes are never trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trainer.store import SPLIT_HELDOUT, SPLIT_TRAIN


def class_disjoint_split(
    labels: np.ndarray,
    classes: Sequence[str],
    *,
    holdout_fraction: float = 0.5,
    holdout_classes: Sequence[str] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Split samples by class (the CUB/Cars/SOP protocol): returns the int8 split of each sample.

    ``holdout_classes`` names the held-out classes explicitly; otherwise a seeded random ``holdout_fraction``
    of the classes is held out. Both sides keep at least one class.
    """
    labels = np.asarray(labels)
    n_classes = len(classes)
    if n_classes < 2:
        raise ValueError(f"a class-disjoint split needs at least 2 classes, found {n_classes}")
    if holdout_classes is not None:
        unknown = sorted(set(holdout_classes) - set(classes))
        if unknown:
            raise ValueError(f"held-out classes not in the data: {unknown}")
        held = np.array([c in set(holdout_classes) for c in classes])
        if held.all() or not held.any():
            raise ValueError("the held-out classes must leave at least one class for training, and hold out one")
    else:
        held = _random_held(n_classes, holdout_fraction, seed)
    return np.where(held[labels], SPLIT_HELDOUT, SPLIT_TRAIN).astype(np.int8)


def _random_held(n_classes: int, holdout_fraction: float, seed: int) -> np.ndarray:
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be between 0 and 1, got {holdout_fraction}")
    n_held = int(round(n_classes * holdout_fraction))
    n_held = min(max(n_held, 1), n_classes - 1)
    order = np.random.default_rng(seed).permutation(n_classes)
    held = np.zeros(n_classes, dtype=bool)
    held[order[:n_held]] = True
    return held


def held_out_classes(classes: Sequence[str], *, holdout_fraction: float = 0.5,
                     holdout_classes: Sequence[str] | None = None, seed: int = 0) -> set[str]:
    """The classes :func:`class_disjoint_split` holds out of ``classes`` with these settings (for showing the
    split before training: the Data tab and the form); empty when the settings are not valid."""
    if len(classes) < 2:
        return set()
    if holdout_classes is not None:
        return set(holdout_classes) & set(classes)
    try:
        held = _random_held(len(classes), holdout_fraction, seed)
    except ValueError:
        return set()
    return {c for c, h in zip(classes, held) if h}
