"""GUI-thread cost of live training curves: TrainingView's growing buffers + throttled redraw, against the plain
pyqtgraph way (append to Python lists, ``curve.setData(list)`` on every batch) — measured side by side.

Each BatchDone updates four curves (loss, easy, semi-hard, hard) and the event loop runs after each one (as it
does between queued events), so painting is counted too. Batches arrive back to back: the fast-GPU worst case.

python -m bench.training_view [--quick]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="300 batches instead of 1,500")
    ap.add_argument("--batches", type=int, default=0, help="number of batches (overrides --quick)")
    a = ap.parse_args()
    n_batches = a.batches or (300 if a.quick else 1_500)
    bpe = 500

    import pyqtgraph as pg
    from PySide6.QtWidgets import QApplication

    from explorer.app import protect_none_refcount

    protect_none_refcount()  # without it shiboken6 6.12 on Python 3.11 aborts after ~65k void Qt calls
    app = QApplication([])
    from explorer.state import AppState
    from explorer.training import TrainingController
    from explorer.views.training.view import TrainingView
    from trainer import events as ev

    batches = [ev.BatchDone(1 + i // bpe, i % bpe, bpe, loss=1.0 / (1 + i), lr=1e-3, images_per_second=100.0,
                            n_tuples=10, n_easy=i % 7, n_semihard=i % 5, n_hard=i % 3, mean_d_ap=0.1, mean_d_an=0.2)
               for i in range(n_batches)]

    # ours
    state = AppState()
    view = TrainingView(state, TrainingController(state))
    view.resize(1000, 700)
    view.show()
    view._on_started(ev.Started(Path("."), epochs=n_batches // bpe + 1, batches_per_epoch=bpe, device="cpu"))
    app.processEvents()
    t0 = time.perf_counter()
    for i, b in enumerate(batches):
        view._on_batch(b)
        app.processEvents()  # the event loop runs between two queued BatchDone events
    view._redraw()
    app.processEvents()
    ours = time.perf_counter() - t0
    assert view.loss_series.n == n_batches

    # plain pyqtgraph: lists, setData on every batch
    widget = pg.GraphicsLayoutWidget()
    widget.resize(1000, 700)
    widget.show()
    p1, p2 = widget.addPlot(), widget.addPlot()
    curves = [p1.plot(), p2.plot(), p2.plot(), p2.plot()]
    xs: list[float] = []
    ys: list[list[float]] = [[], [], [], []]
    app.processEvents()
    t0 = time.perf_counter()
    for i, b in enumerate(batches):
        xs.append((b.epoch - 1) * bpe + b.batch)
        for lst, v in zip(ys, (b.loss, b.n_easy, b.n_semihard, b.n_hard)):
            lst.append(v)
        for c, lst in zip(curves, ys):
            c.setData(xs, lst)
        app.processEvents()  # the event loop runs between two queued BatchDone events
    app.processEvents()
    plain = time.perf_counter() - t0

    print(f"batches: {n_batches}, curves: 4, event loop run after each batch")
    print(f"TrainingView (buffers + <=10 redraws/s): {ours:8.3f} s  {1e6 * ours / n_batches:8.1f} us/batch")
    print(f"plain pyqtgraph (setData every batch):   {plain:8.3f} s  {1e6 * plain / n_batches:8.1f} us/batch")
    print(f"speed-up: {plain / ours:.1f}x")
    view.close()
    widget.close()


if __name__ == "__main__":
    main()
