"""Map benchmarks: (a) pan/zoom frames/s, our raster map vs a plain pyqtgraph ScatterPlotItem; (b) warm-started
projection of a 10k epoch vs umap-learn's default fit_transform; (c) first map in a fresh process.

(d) the app's path: first map from the warmed-up child process.

python -m bench.map [--quick]     (numbers are noisy on a shared CPU)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402


_KEEP: list = []


def _points(n: int, k: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, k, n)
    centres = rng.normal(size=(k, 2)) * 10
    return (centres[lab] + rng.normal(size=(n, 2))).astype(np.float32), lab


def bench_fps(n: int, frames: int) -> None:
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtWidgets import QApplication
    import pyqtgraph as pg

    app = QApplication.instance() or QApplication([])
    from explorer.state import AppState
    from explorer.views.map.view import MapView
    from explorer.widgets.palette import PALETTE

    xy, lab = _points(n)

    def fps(plot, view, step) -> float:
        img = QImage(plot.size(), QImage.Format.Format_ARGB32)
        t0 = time.perf_counter()
        for f in range(frames):
            step(f)
            app.processEvents()
            p = QPainter(img)
            plot.render(p)
            p.end()
        return frames / (time.perf_counter() - t0)

    # ours: MapView with the layout injected (raster when many points are in view)
    mv = MapView(AppState(), method="pca", warm_up=False)
    mv.resize(1000, 700)
    mv.show()
    mv.labels, mv.split, mv.classes = lab, np.zeros(n, np.int8), [str(i) for i in range(50)]
    mv._brushes = [pg.mkBrush(*PALETTE[i % 20]) for i in range(50)]
    mv._rgba = np.array([(*PALETTE[i % 20], 255) for i in range(50)], np.uint8)
    mv._update_visible()
    mv.xy = xy
    mv._draw_order = np.random.default_rng(0).permutation(n)
    t0 = time.perf_counter()
    mv.fit_view()
    app.processEvents()
    while mv._draw_jobs.is_running("frame"):  # 2e5+ points are drawn in the map's drawing thread: wait for it
        app.processEvents()
        time.sleep(0.001)
    t_set_ours = time.perf_counter() - t0
    vb = mv.viewbox

    def pan(f):  # pan and zoom a little each frame; the throttled re-render runs when its timer fires
        vb.translateBy(x=0.3 * np.sin(f / 5), y=0.2)
        vb.scaleBy((0.995, 0.995) if f % 20 < 10 else (1.005, 1.005))
    ours = fps(mv.plot, vb, pan)

    # library: one ScatterPlotItem with all points (what a user of pyqtgraph would write)
    w = pg.PlotWidget()
    w.resize(mv.plot.size())
    w.show()
    brushes = [pg.mkBrush(*PALETTE[i % 20]) for i in range(50)]
    sp = pg.ScatterPlotItem(pxMode=True, useCache=True, pen=None, size=5)
    t0 = time.perf_counter()
    sp.setData(x=xy[:, 0], y=xy[:, 1], brush=[brushes[i] for i in lab])
    w.addItem(sp)
    app.processEvents()
    t_set_lib = time.perf_counter() - t0
    vb2 = w.getViewBox()

    def pan2(f):
        vb2.translateBy(x=0.3 * np.sin(f / 5), y=0.2)
        vb2.scaleBy((0.995, 0.995) if f % 20 < 10 else (1.005, 1.005))
    lib = fps(w, vb2, pan2)
    print(f"(a) n={n:>9,}: pan/zoom ours {ours:7.1f} frames/s (mode {mv.render_mode}, first draw {t_set_ours:.2f} s)"
          f" | ScatterPlotItem {lib:6.1f} frames/s (setData+draw {t_set_lib:.2f} s) | ratio {ours / lib:.1f}x")
    mv.close()
    w.close()
    _KEEP.extend([mv, w, sp])  # keep the Qt objects alive until exit (PySide aborts if they die mid-run)


def bench_warm(n: int, d: int = 64) -> None:
    import warnings

    warnings.simplefilter("ignore")
    from trainer.analysis import projection as P

    P.warm_up()
    rng = np.random.default_rng(0)
    k = 40
    lab = rng.integers(0, k, n)
    centres = rng.normal(size=(k, d)) * 3
    e1 = (centres[lab] + rng.normal(size=(n, d))).astype(np.float32)
    e2 = (e1 + 0.1 * rng.normal(size=e1.shape)).astype(np.float32)
    first = P.project(e1, "umap")
    t0 = time.perf_counter()
    ours = P.project(e2, "umap", previous=first.xy)
    t_ours = time.perf_counter() - t0
    import umap

    umap.UMAP(random_state=0, n_epochs=5).fit_transform(e2[:300])  # compile its own path first: fair timing
    t0 = time.perf_counter()
    ref = umap.UMAP(random_state=0).fit_transform(e2)
    t_lib = time.perf_counter() - t0
    span = np.ptp(first.xy, axis=0).max()
    moved = np.median(np.linalg.norm(ours.xy - first.xy, axis=1)) / span
    moved_lib = np.median(np.linalg.norm(P.procrustes_align(ref, first.xy) - first.xy, axis=1)) / span
    print(f"(b) n={n:,}: warm-started map {t_ours:.2f} s ({ {k: round(v, 2) for k, v in ours.timings.items()} }) "
          f"| umap-learn default fit_transform {t_lib:.2f} s | ratio {t_lib / t_ours:.1f}x faster; median move "
          f"{moved:.3f} vs {moved_lib:.3f} of the map width (lib result Procrustes-aligned)")


def bench_fresh(n: int) -> None:
    code = (
        "import time; t0=time.perf_counter();import warnings; warnings.simplefilter('ignore');"
        "import numpy as np; from trainer.analysis import projection as P; t1=time.perf_counter(); w=P.warm_up();"
        "t2=time.perf_counter(); rng=np.random.default_rng(0); lab=rng.integers(0,40,%d);"
        "x=(rng.normal(size=(40,64))[lab]*3+rng.normal(size=(%d,64))).astype(np.float32);"
        "t3=time.perf_counter(); P.project(x,'umap'); t4=time.perf_counter();"
        "print(f'{t1-t0:.2f} {t2-t1:.2f} {t4-t3:.2f}')" % (n, n)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], check=True).stdout.split()
    imp, warm, fit = map(float, out[-3:])
    print(f"(c) fresh process, n={n:,}: import {imp:.2f} s + warm-up {warm:.2f} s + first (cold) UMAP {fit:.2f} s = "
          f"{imp + warm + fit:.2f} s (numba cache kept; warm-up runs at app start, before the first epoch)")


def bench_fresh_worker(n: int) -> None:
    """The app's path: the projection child process is started (and warms up) at app start; the first epoch's
    10k map is asked for after warm-up. Reported: start-to-warm and the first map after the epoch commit."""
    import warnings

    warnings.simplefilter("ignore")
    from trainer.analysis.projection_worker import ProjectionWorker

    rng = np.random.default_rng(0)
    lab = rng.integers(0, 40, n)
    x = (rng.normal(size=(40, 64))[lab] * 3 + rng.normal(size=(n, 64))).astype(np.float32)
    t0 = time.perf_counter()
    w = ProjectionWorker()
    w.warm_up()
    t1 = time.perf_counter()
    first = w.project(x, "umap")
    t2 = time.perf_counter()
    w.project(x + 0.05 * rng.normal(size=x.shape).astype(np.float32), "umap", previous=first.xy)
    t3 = time.perf_counter()
    w.close()
    print(f"(d) app path, n={n:,}: child start + import + warm-up {t1 - t0:.2f} s (at app start) | first map after "
          f"the epoch commit {t2 - t1:.2f} s ({ {k: round(v, 2) for k, v in first.timings.items()} }) | next epoch "
          f"(warm start) {t3 - t2:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    a = ap.parse_args()
    sizes = (20_000, 100_000) if a.quick else (100_000, 1_000_000)
    for n in sizes:  # one process per size: PySide aborts when a second big plot is built in the same process
        code = f"from bench.map import bench_fps; bench_fps({n}, {20 if a.quick else 60})"
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           cwd=Path(__file__).resolve().parents[1])
        print(r.stdout.strip() or f"(a) n={n:,}: failed: {r.stderr.strip().splitlines()[-1:]}")
    bench_warm(2_000 if a.quick else 10_000)
    bench_fresh(1_000 if a.quick else 10_000)
    bench_fresh_worker(1_000 if a.quick else 10_000)


if __name__ == "__main__":
    main()
