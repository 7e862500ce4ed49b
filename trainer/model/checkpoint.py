"""The one checkpoint format: its marker, loading (no pickled code) and checking against a run."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

from trainer.errors import TrainingError

CHECKPOINT_FORMAT = "embedding-explorer-checkpoint"


def load_checkpoint(path: Path | str) -> dict:
    """Load a checkpoint written by ``RunWriter.write_checkpoint`` with ``weights_only=True`` (no code runs);
    anything else is refused with a TrainingError naming the file and the reason."""
    import torch  # here, not at import: the store and the window import this module without needing torch

    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"checkpoint {path} does not exist")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise TrainingError(f"{path} is not a checkpoint this program can load: it is not a zip archive as "
                                f"torch.save writes")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise TrainingError(f"{path} is not a checkpoint this program can load safely: it holds objects other "
                            f"than tensors and plain data, and loading those could run code") from None
    except Exception as exc:  # torch raises many kinds for a foreign or damaged file
        first = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
        raise TrainingError(f"{path} is not a checkpoint this program can load ({type(exc).__name__}"
                            f"{': ' + first[0] if first else ''})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path} is not an Embedding Explorer checkpoint (no {CHECKPOINT_FORMAT!r} marker)")
    return state


def check_checkpoint(state: dict, path: Path | str, *, classes: list[str] | None = None, dim: int | None = None) -> None:
    """Refuse a checkpoint whose classes or embedding dimension do not match what it is used with."""
    if classes is not None and list(state.get("classes", [])) != list(classes):
        raise TrainingError(f"checkpoint {path} was trained on other classes ({len(state.get('classes', []))} "
                            f"classes) than this run ({len(classes)} classes)")
    if dim is not None and int(state.get("embedding_dim", -1)) != int(dim):
        raise TrainingError(f"checkpoint {path} has embedding dimension {state.get('embedding_dim')}, "
                            f"this run uses {dim}")
