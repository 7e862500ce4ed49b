"""The real window opening a very large run (issue 7): how long each view takes to show its result, and how late
a 10 ms timer of the GUI thread fires meanwhile (the explorer's bound: p99 <= 50 ms, max <= 200 ms).

    python -m bench.gui_scale [--n 1000000] [--dim 128] [--classes 2000] [--quick]

A synthetic run of ``--n`` images (half the classes trained, half held out; two epochs, the second better
clustered) is written to a temporary folder; its image files do not exist, so thumbnails show placeholders. The
window opens it as a person would (File > Open run): the map of the last epoch (UMAP fitted on a stratified
sample, the rest placed), then a click on a sample (its neighbours: an IVF index at 1e6, with measured recall),
then the Triplets tab (a stated sample of anchors) and the Threshold tab (pairs sampled by class beyond the exact
range). Each stage's wall time and what the view says are printed, with the latency over the whole session.

``--stalls`` also samples every thread's Python stack each 10 ms and, for each time the GUI timer was more than
150 ms late, prints where the GUI thread was meanwhile (how this session's stalls were found).
"""

from __future__ import annotations

import argparse
import collections
import os
import threading
import traceback
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402


def write_run(root: Path, n: int, dim: int, classes: int) -> Path:
    from trainer.config import TrainConfig
    from trainer.store import SPLIT_HELDOUT, SPLIT_TRAIN, RunWriter, SampleTable

    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, n).astype(np.int64)
    split = np.where(labels < classes // 2, SPLIT_TRAIN, SPLIT_HELDOUT).astype(np.int8)
    samples = SampleTable(paths=[f"c{label}/{i}.png" for i, label in enumerate(labels)], labels=labels,
                          split=split, roots=[str(root / "images")], root_index=np.zeros(n, np.int16))
    cfg = TrainConfig().to_dict()
    writer = RunWriter.create(root / "run", config=cfg, classes=[f"class {c}" for c in range(classes)],
                              samples=samples)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    for epoch, spread in ((0, 2.0), (1, 0.6)):
        emb = centres[labels]
        emb += spread * rng.standard_normal((n, dim), dtype=np.float32)
        writer.write_epoch(epoch, emb, {})
        del emb
    writer.close()
    return root / "run"


def _rss_parts() -> str:
    """Resident memory now, split into the process's own (anonymous) pages and mapped file pages (Linux)."""
    try:
        with open("/proc/self/status") as f:
            got = {k: int(v.split()[0]) / 2**20 for k, _, v in (line.partition(":") for line in f)
                   if k in ("RssAnon", "RssFile")}
        return f"{got['RssAnon']:.1f} GB anonymous + {got['RssFile']:.1f} GB of mapped files"
    except (OSError, KeyError, ValueError):
        return "resident memory unknown"


def _rss_gb() -> float:
    """This process's resident memory now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


class StackSampler:
    """Every thread's innermost Python frames, every 10 ms, in a thread of its own (it needs the GIL to look)."""

    def __init__(self, depth: int = 6) -> None:
        self.samples: list[tuple[float, dict[int, str]]] = []
        self.rss: list[float] = []  # resident memory (GB) at each sample
        self.depth = depth
        self._stop = False
        self.gui = threading.main_thread().ident
        threading.Thread(target=self._run, name="stack sampler", daemon=True).start()

    def _run(self) -> None:
        self._tid = threading.get_ident()
        while not self._stop:
            now = time.perf_counter()
            stacks = {tid: " < ".join(f"{Path(fr.filename).stem}.{fr.name}:{fr.lineno}"
                                      for fr in reversed(traceback.extract_stack(frame)[-self.depth:]))
                      for tid, frame in sys._current_frames().items()}
            self.samples.append((now, stacks))
            self.rss.append(_rss_gb())
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop = True

    def report(self, ticks: np.ndarray, t0: float, late: float = 0.15) -> None:
        times = np.array([t for t, _ in self.samples])
        for g in np.flatnonzero(np.diff(ticks) > late):
            a, b = ticks[g], ticks[g + 1]
            inside = [st.get(self.gui, "") for t, st in self.samples if a <= t <= b]
            print(f"  GUI timer {1e3 * (b - a):.0f} ms late at {a - t0:.1f} s; the GUI thread was in "
                  f"({len(inside)} samples):")
            for stack, count in collections.Counter(inside).most_common(4):
                print(f"    {count:3d} x {stack}")
        rss = np.asarray(self.rss)
        if len(rss):  # where memory grew most: the threads' stacks at the sample after each of the 3 largest rises
            rise = np.diff(rss, prepend=rss[0])
            for g in sorted(np.argsort(rise)[-3:]):
                if rise[g] <= 0.05:
                    continue
                print(f"  resident memory rose {rise[g]:.2f} GB to {rss[g]:.2f} GB at {times[g] - t0:.1f} s; threads:")
                for tid, stack in self.samples[g][1].items():
                    if tid != self._tid and "thread._worker:" not in stack:  # not the sampler, not idle workers
                        print(f"    {stack}")
        gaps = np.flatnonzero(np.diff(times) > late)
        for g in gaps:  # the sampler itself could not run: some thread held the GIL (or the CPU was taken)
            print(f"  the sampler waited {1e3 * (times[g + 1] - times[g]):.0f} ms at {times[g] - t0:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--classes", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="n = 20,000")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds to wait for each view")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic run (it is deleted at the end)")
    ap.add_argument("--stalls", action="store_true", help="sample stacks; say where the GUI thread was when late")
    a = ap.parse_args()
    n = 20_000 if a.quick else a.n
    import warnings

    warnings.simplefilter("ignore")
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from bench.common import latency_probe, summary
    from explorer.app import create_window
    from explorer.settings import Settings
    from trainer.store import SPLIT_HELDOUT

    app = QApplication([])
    tmp = Path(tempfile.mkdtemp(prefix="ee-bench-scale-"))
    t = time.perf_counter()
    run_dir = write_run(tmp, n, a.dim, a.classes)
    print(f"run of {n:,} x {a.dim} ({a.classes} classes, 2 epochs) written in {time.perf_counter() - t:.1f} s")

    settings = Settings(QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat))
    win = create_window(app, settings=settings)
    win.resize(1400, 900)
    win.show()
    win.map_view.projection_worker.warm_up()  # as at app start (bench.map measures a cold start)
    maps: list[int] = []
    win.map_view.map_ready.connect(maps.append)
    timer, lat = latency_probe()

    stages: list[tuple[str, int, int]] = []  # (stage, first tick, last tick): the latency of each stage
    peaks: dict[str, float] = {}  # the process's peak RSS (GB) when each stage ended: which stage raised it

    def wait(what: str, done, t0: float) -> float:
        first = len(lat)
        while not done():
            app.processEvents()
            time.sleep(0.002)
            if time.perf_counter() - t0 > a.timeout:
                raise SystemExit(f"{what}: no result after {a.timeout:.0f} s")
        stages.append((what, first, len(lat)))
        peaks[what] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        return time.perf_counter() - t0

    sampler = StackSampler() if a.stalls else None
    ticks: list[float] = []
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    assert win.open_run(run_dir)
    t_map = wait("map", lambda: 1 in maps, t0)
    print(f"  map of epoch 1 on screen {t_map:.1f} s after opening; the view says: "
          f"{win.map_view.status.text()}")

    nb = win.neighbours_view
    held = np.flatnonzero(win.state.run.samples.split == SPLIT_HELDOUT)
    sid = int(held[0]) if len(held) else 0
    t0 = time.perf_counter()
    win.state.set_selection(np.array([sid]))
    t_nb = wait("neighbours", lambda: nb.result is not None and not nb.is_busy(), t0)
    print(f"  neighbours of sample {sid}: {t_nb:.1f} s (index build included); the panel says: {nb.info.text()}")
    t0 = time.perf_counter()
    sid2 = sid + 1
    win.state.set_selection(np.array([sid2]))
    t_nb2 = wait("second query", lambda: nb.result is not None and nb.result.query.sample_id == sid2, t0)
    t_nb2_all = wait("its comparison", lambda: nb.result is not None and nb.result.query.sample_id == sid2
                     and not nb.is_busy(), t0)
    print(f"  a second click: its neighbours on screen after {t_nb2 * 1e3:.0f} ms (index cached), what changed "
          f"since the previous epoch after {t_nb2_all * 1e3:.0f} ms")

    tv = win.triplets_view
    t0 = time.perf_counter()
    win.show_view("Triplets")
    t_tv = wait("triplets", lambda: tv.result is not None and tv.result.census is not None and not tv.is_busy(), t0)
    print(f"  triplet census and diagnostics: {t_tv:.1f} s; the view says: {tv.census_label.text()}")
    for d in tv.result.diagnostics:
        print(f"    finding: {d.title}: {d.detail[:160]}")

    rv = win.threshold_view
    t0 = time.perf_counter()
    win.show_view("Threshold")
    t_roc = wait("threshold", lambda: rv.data is not None and not rv.is_busy(), t0)
    print(f"  threshold studio: {t_roc:.1f} s; it says: {rv.title.text()[:300]}")
    timer.stop()
    if sampler is not None:
        sampler.stop()
        sampler.report(np.asarray(ticks), t_all)
    for what, i, j in stages:
        part = np.asarray(lat[i:j])  # every tick, the first included (it holds the open of the run)
        if len(part):
            print(f"  latency while waiting for the {what}: max {part.max():.0f} ms, "
                  f"p99 {np.percentile(part, 99):.1f} ms; peak RSS by its end {peaks[what]:.1f} GB")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"N = {n:,}: whole session {time.perf_counter() - t_all:.0f} s, peak RSS of the window's process "
          f"{peak:.1f} GB ({_rss_parts()} at the end); {summary(lat)}")
    win.shutdown(30)
    if not a.keep:
        shutil.rmtree(tmp, ignore_errors=True)  # the run is ~1 GB at 1e6


if __name__ == "__main__":
    main()
