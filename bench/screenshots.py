"""The README's screenshots, taken again from what the app does today.

Trains the two demo runs the screenshots show (the "Quick look (CPU)" preset for 8 epochs, and the same preset with
the triplet loss for 4 epochs on the same split, for the compare dialog), then opens the window at 1280 x 800 and
grabs each view once its work has finished (the review of suspected mislabels: of the first run that has any):

    xvfb-run -s "-screen 0 1280x800x24" python -m bench.screenshots --out docs/screenshots [--runs DIR]

Under a real X screen (Xvfb), not offscreen: the offscreen platform draws fonts and styles differently. The runs
are kept in ``--runs`` (a temporary folder by default); a run folder that is already there is used as it is.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZE = (1280, 800)
SELECTED = 40  # the sample whose neighbours the map screenshot shows


def train_runs(runs: Path, demo: Path) -> tuple[Path, Path]:
    quick, other = runs / "quick-look", runs / "triplet"
    common = ["--seed", "0", "--device", "cpu", "--workers", "0", "--quiet"]
    for out, opts in ((quick, ["--preset", "quick-cpu", "--epochs", "8"]),
                      (other, ["--preset", "quick-cpu", "--loss", "triplet", "--epochs", "4"])):
        if (out / "manifest.json").is_file():
            continue
        print(f"training {out.name} ...", flush=True)
        subprocess.run([sys.executable, str(ROOT / "main.py"), "train", str(demo), "--out", str(out), *opts, *common],
                       check=True)
    return quick, other


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    p.add_argument("--runs", type=Path, help="where the demo runs are trained (default: a temporary folder)")
    a = p.parse_args(argv)

    from trainer.data.demo import ensure_demo_folder

    demo = ensure_demo_folder()
    with tempfile.TemporaryDirectory() as tmp:
        runs = a.runs or Path(tmp) / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        quick, other = train_runs(runs, demo)
        return _grab_all(a.out, quick, other, demo, Path(tmp))


def _grab_all(out: Path, quick: Path, other: Path, demo: Path, tmp: Path) -> int:
    from PySide6.QtCore import QEventLoop, QSettings
    from PySide6.QtWidgets import QApplication

    from explorer.app import create_window
    from explorer.settings import Settings

    app = QApplication.instance() or QApplication(["Embedding Explorer"])
    out.mkdir(parents=True, exist_ok=True)

    def wait(seconds: float, until=None) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
            if until is not None and until():
                return True
            time.sleep(0.02)
        return until is None

    def save(widget, name: str) -> None:
        wait(1.0)  # the last repaints
        path = out / name
        widget.grab().save(str(path))
        print(f"wrote {path}", flush=True)

    settings = Settings(QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat))
    window = create_window(app, settings=settings, preload=True)
    window.resize(*SIZE)
    window.show()
    ready: list[int] = []
    window.map_view.map_ready.connect(ready.append)
    window.open_run(quick)
    last = window.state.run.epochs[-1]
    if not wait(300, lambda: last in ready):
        print("the map was not drawn in 5 minutes", file=sys.stderr)
        return 1
    window.show_view("Map")
    window.state.set_selection([SELECTED])
    wait(8)
    save(window, "map.png")
    for view, name in (("Threshold", "threshold.png"), ("Triplets", "triplets.png"), ("Train", "train.png")):
        window.show_view(view)
        wait(20)
        save(window, name)

    dialog = window.open_compare_dialog([other])
    dialog.resize(*SIZE)
    wait(30)
    dialog.tabs.setCurrentIndex(dialog.tabs.count() - 1)  # image by image
    wait(15)
    if dialog.images.table.rowCount():
        dialog.images.table.selectRow(0)  # the image that changed most, its neighbours in both runs
    wait(5)
    save(dialog, "compare.png")
    dialog.close()

    for run in (quick, other):
        if Path(window.state.run.run_dir).resolve() != run.resolve():
            window.open_run(run)
            wait(60, lambda: window.state.run is not None and window.state.epoch >= 0)
        review = window.curate.review()
        review.resize(*SIZE)
        wait(40)
        if review.table.rowCount() or run == other:
            review.table.selectRow(0)
            save(review, "review.png")
            review.close()
            break
        review.close()

    # the Train form of a new folder: the recipe chosen for it and the estimated time per epoch
    fresh = create_window(app, settings=Settings(QSettings(str(tmp / "fresh.ini"), QSettings.Format.IniFormat)),
                          folder=demo, preload=False)
    fresh.resize(*SIZE)
    fresh.show()
    fresh.show_view("Train")
    wait(25)
    save(fresh, "recipe.png")
    for w in (fresh, window):
        w.close()
    wait(3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
