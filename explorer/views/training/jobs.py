"""The training view's background work (no Qt): reading the per-batch telemetry of committed epochs.
"""

from __future__ import annotations

import numpy as np



def read_batch_telemetry(run, epochs: list[int], *, progress=None, partial=None,
                         is_cancelled=None) -> list[tuple[int, dict[str, np.ndarray]]]:
    """The stored per-batch telemetry of ``epochs``, in order (a background job; also called directly).

    Epoch 0 evaluates the untrained network and has no batches: it comes back empty, as does an epoch whose file
    cannot be read (the curves then have a gap; the map and the other views still work)."""
    out: list[tuple[int, dict[str, np.ndarray]]] = []
    for k, epoch in enumerate(epochs):
        if is_cancelled is not None and is_cancelled():
            return out
        tel: dict[str, np.ndarray] = {}
        if epoch > 0:
            try:
                tel = run.telemetry(int(epoch))
            except Exception:
                tel = {}
        out.append((int(epoch), tel))
        if progress is not None:
            progress((k + 1) / max(1, len(epochs)), f"reading epoch {epoch}'s batches")
    return out
