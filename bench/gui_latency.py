"""GUI latency probe: how late a 10 ms QTimer fires while the map view loads epochs and projects them in the
background (the event loop must stay responsive). Target: p99 <= 50 ms, max <= 200 ms.

python -m bench.gui_latency [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402

from bench.common import latency_probe, summary  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--method", default="umap")
    ap.add_argument("--mode", choices=("process", "thread", "both", "train", "all"), default="all",
                    help="UMAP in the child process (ours) or in a worker thread (the plain way), or both; "
                         "'train': the whole window training the demo digits with every view live; 'all': each")
    a = ap.parse_args()
    n, epochs = (2_000, 3) if a.quick else (10_000, 5)
    import warnings

    warnings.simplefilter("ignore")
    from PySide6.QtWidgets import QApplication

    app = QApplication([])
    from trainer.store import RunWriter, SampleTable

    tmp = Path(tempfile.mkdtemp(prefix="ee-bench-"))
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 20, n)
    samples = SampleTable(paths=[f"c{l}/{i}.png" for i, l in enumerate(lab)], labels=lab.astype(np.int64),
                          split=np.zeros(n, np.int8), roots=[str(tmp)], root_index=np.zeros(n, np.int16))
    w = RunWriter.create(tmp / "run", config={}, classes=[f"c{i}" for i in range(20)], samples=samples)
    centres = rng.normal(size=(20, 64)) * 3
    emb = centres[lab] + rng.normal(size=(n, 64))
    for e in range(epochs):
        emb = emb + 0.2 * rng.normal(size=emb.shape)
        w.write_epoch(e, emb.astype(np.float32), {})
    w.close()

    modes = {"both": ("thread", "process"), "all": ("thread", "process", "train")}.get(a.mode, (a.mode,))
    for mode in modes:
        if mode == "train":
            probe_training(app, Path(tempfile.mkdtemp(prefix="ee-bench-train-")), epochs=2 if a.quick else 3)
        else:
            probe(app, tmp, n, epochs, a.method, mode)


def probe_training(app, tmp: Path, epochs: int) -> None:
    """The real window on the demo digits ("Quick look (CPU)" preset): timer lateness from Start until the map of
    the last epoch is drawn, while the trainer thread trains, every epoch is committed and the views update."""
    from PySide6.QtCore import QSettings

    from explorer.app import create_window
    from explorer.settings import Settings
    from trainer.data.demo import ensure_demo_folder

    settings = Settings(QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat))
    win = create_window(app, settings=settings)
    win.resize(1280, 820)
    win.show()
    done_scan: list = []
    win.dataset_view.scan_finished.connect(done_scan.append)
    win.open_folder(ensure_demo_folder())
    while not done_scan:
        app.processEvents()
        time.sleep(0.005)
    win.config_panel.apply_preset("Quick look (CPU)")
    win.config_panel.epochs.setValue(epochs)
    win.config_panel.set_runs_root(tmp / "runs")
    win.map_view.projection_worker.warm_up()  # started with the app; a fresh start is bench.map's first-map figure
    maps: list[int] = []
    win.map_view.map_ready.connect(maps.append)
    stopped: list = []
    win.controller.stopped.connect(stopped.append)
    timer, lat = latency_probe()
    problems = win.config_panel.refresh_problems()
    if problems:  # start_training would explain them in a modal box
        raise SystemExit(f"the preset cannot start: {problems}")
    t0 = time.perf_counter()
    assert win.start_training() is not None
    win.show_view("Map")
    timer.start()
    while (not stopped or epochs not in maps) and time.perf_counter() - t0 < 600:
        app.processEvents()
        time.sleep(0.001)
    timer.stop()
    print(f"  train: demo digits, {epochs} epochs + the untrained epoch 0 with the map tab shown, "
          f"{len(maps)} maps in {time.perf_counter() - t0:.1f} s: {summary(lat)}")
    win.shutdown(30)


def probe(app, tmp, n: int, epochs: int, method: str, mode: str) -> None:
    """Open the run in a MapView and measure timer lateness while it computes ``epochs`` maps."""
    from explorer.jobs import JobRunner
    from explorer.state import AppState
    from explorer.views.map.view import MapView
    from trainer.analysis import projection
    from trainer.store import RunReader

    # as the app does before its window shows: the config panel imports the losses, create_window the rest
    import trainer.model.losses  # noqa: F401
    from explorer.app import preload_modules

    preload_modules()

    jobs = JobRunner()
    if mode != "process":
        projection.warm_up()
    state = AppState()
    view = MapView(state, method=method, warm_up=False, jobs=jobs, process=(mode == "process"))
    if mode == "process":
        view.projection_worker.warm_up()  # at app start, before the first epoch: wait for it here
    view.resize(1000, 700)
    view.show()
    timer, lat = latency_probe()
    timer.start()
    reader = RunReader(tmp / "run")
    done: list[int] = []
    view.map_ready.connect(done.append)
    t0 = time.perf_counter()
    state.set_run(reader)
    # the run opens on its last epoch; then step back through the history, one new (warm-started) map each
    for k in range(epochs):
        while len(done) <= k and time.perf_counter() - t0 < 300:
            app.processEvents()
            time.sleep(0.001)
        if k + 1 < epochs:
            state.set_epoch(epochs - 2 - k)
    timer.stop()
    view.jobs.shutdown(5)
    print(f"{mode:>7}: n={n:,} {method}, {len(done)} maps in {time.perf_counter() - t0:.1f} s: {summary(lat)}")


if __name__ == "__main__":
    main()
