"""The one checkpoint format: loading (no pickled code) and checking against a run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from trainer.errors import TrainingError

CHECKPOINT_FORMAT = "embedding-explorer-checkpoint"


def load_checkpoint(path: Path | str) -> dict:
    """Load one of our checkpoints with ``weights_only=True``; refuse anything else with a clear message."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(f"{path} is not a checkpoint this program can load safely ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path} is not an Embedding Explorer checkpoint")
    return state


def check_checkpoint(state: dict, path: Path | str, *, classes: list[str] | None = None, dim: int | None = None) -> None:
    """Refuse a checkpoint whose classes or embedding dimension do not match what it is used with."""
    if classes is not None and list(state.get("classes", [])) != list(classes):
        raise TrainingError(f"checkpoint {path} was trained on other classes ({len(state.get('classes', []))} "
                            f"classes) than this run ({len(classes)} classes)")
    if dim is not None and int(state.get("embedding_dim", -1)) != int(dim):
        raise TrainingError(f"checkpoint {path} has embedding dimension {state.get('embedding_dim')}, "
                            f"this run uses {dim}")
