"""The map's background work (no Qt): the layout of an epoch, a quick PCA first, then UMAP warm-started from the previous epoch.
"""

from __future__ import annotations

import numpy as np
from trainer.analysis import projection
from explorer.views.map.geometry import draw_order

METHOD_TITLES = {"umap": "UMAP", "pca": "PCA", "tsne": "t-SNE"}


def _drawable(epoch: int, layout: projection.Layout) -> tuple[int, projection.Layout, np.ndarray]:
    """A layout with its positions already in drawing order: at 1e6 points the shuffle and the gather took
    ~0.15 s of the GUI thread per layout; here they run in the job's thread."""
    xy = np.asarray(layout.xy, np.float32)
    return epoch, layout, xy[draw_order(len(xy))]


def map_job(run, epoch: int, method: str, projector: projection.Projector, labels: np.ndarray | None,
            pca_first: bool, *, progress, partial, is_cancelled):
    """Background job: load one epoch and project it; a quick PCA map comes first as a partial result if asked."""
    progress(0.0, f"loading epoch {epoch}")
    data = run.load_epoch(epoch)
    emb = np.asarray(data.embeddings, dtype=np.float32)
    ids = np.arange(len(emb), dtype=np.int64)
    if is_cancelled():
        return None
    if pca_first and method != "pca":
        quick = projection.project(emb, "pca", ids=ids, seed=projector.seed, metric=projector.metric)
        worker = projector.worker
        warm = worker.is_warm() if worker is not None else projection.is_warm()
        quick.note = f"quick PCA preview while {METHOD_TITLES.get(method, method)} {'runs' if warm else 'compiles'}"
        partial(_drawable(epoch, quick))
    layout = projector.project(emb, ids=ids, labels=labels, method=method, is_cancelled=is_cancelled,
                               progress=lambda f, t="": progress(0.1 + 0.9 * f, t))
    return _drawable(epoch, layout)


def _warm_up_job(*, progress, partial, is_cancelled) -> float:
    return projection.warm_up()
