"""Words the views share: how a distance is computed, the names of the splits.
"""

from __future__ import annotations

from trainer.store import SPLIT_HELDOUT, SPLIT_TRAIN

SPLIT_NAMES = {SPLIT_TRAIN: "train", SPLIT_HELDOUT: "held-out"}


def metric_words(metric: str) -> str:
    """How a distance of this metric is computed, for labels."""
    return "cosine distance 1 − cos(a, b)" if metric == "cosine" else "Euclidean distance ‖a − b‖"


ZERO_WIDTH_SPACE = "\u200b"
_BREAK_AFTER = "/\\_-."


def breakable(text: str) -> str:
    """``text`` with a zero-width space after each path separator (and ``_ - .``) inside long words, so that a
    word-wrapping label can break a long file path; short words and rich-text tags are left as they are."""
    out: list[str] = []
    in_tag = False
    run = 0  # characters since the last space
    for ch in text:
        out.append(ch)
        if ch == "<":
            in_tag = True
        elif ch == ">":
            in_tag = False
        if ch.isspace():
            run = 0
            continue
        run += 1
        if not in_tag and ch in _BREAK_AFTER and run >= 12:
            out.append(ZERO_WIDTH_SPACE)
    return "".join(out)

