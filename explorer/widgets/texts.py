"""Words the views share: how a distance is computed, the names of the splits.
"""

from __future__ import annotations

from trainer.store import SPLIT_HELDOUT, SPLIT_TRAIN

SPLIT_NAMES = {SPLIT_TRAIN: "train", SPLIT_HELDOUT: "held-out"}


def metric_words(metric: str) -> str:
    """How a distance of this metric is computed, for labels."""
    return "cosine distance 1 − cos(a, b)" if metric == "cosine" else "Euclidean distance ‖a − b‖"
