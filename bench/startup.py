"""Start-up of the window: seconds from `python main.py` to the window on screen, and to every library loaded.

Side by side in one run with what any PySide6 program pays: a bare `QApplication` + `QMainWindow` shown (the
floor), and with the old order (every heavy library imported before the window shows). Issue 15's target: the
window within 3 s of launch on a warm machine, its start-up work in the background with a visible state.

    python -m bench.startup [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BARE = """
import json, os, sys, time
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMainWindow
app = QApplication(sys.argv)
w = QMainWindow(); w.resize(1280, 800); w.show()
def done():
    open(os.environ["EMBEDDING_EXPLORER_STARTUP_PROBE"], "w").write(json.dumps(
        {"shown_s": time.time() - float(os.environ["EMBEDDING_EXPLORER_T0"])}))
    app.quit()
QTimer.singleShot(0, done)
app.exec()
"""

OLD_ORDER = """
import os, sys, time
sys.path.insert(0, os.environ["EE_ROOT"])
from explorer.app import preload_modules
preload_modules()  # what the app did before the window: every heavy import on the GUI thread
from explorer.app import run_app
sys.exit(run_app(sys.argv[:1]))
"""


def launch(args: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.json"
        env = dict(os.environ, EMBEDDING_EXPLORER_STARTUP_PROBE=str(probe), EMBEDDING_EXPLORER_T0=repr(time.time()),
                   EE_ROOT=str(ROOT), XDG_CONFIG_HOME=tmp)
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
        subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True, timeout=300,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return json.loads(probe.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    launch(["main.py"])  # warm the file cache and numba's cache once
    rows = {"bare PySide6 window": [], "the app (window first)": [], "the app, old order (imports first)": []}
    for _ in range(a.repeats):
        rows["bare PySide6 window"].append(launch(["-c", BARE]))
        rows["the app (window first)"].append(launch(["main.py"]))
        rows["the app, old order (imports first)"].append(launch(["-c", OLD_ORDER]))
    floor = statistics.median(r["shown_s"] for r in rows["bare PySide6 window"])
    print(f"start-up, median of {a.repeats} warm launches (QT_QPA_PLATFORM={os.environ.get('QT_QPA_PLATFORM', 'offscreen')})")
    print(f"{'':38s} {'window shown':>13s} {'x bare':>7s} {'libraries loaded':>17s} {'peak RSS':>9s}")
    for name, got in rows.items():
        shown = statistics.median(r["shown_s"] for r in got)
        ready = [r["ready_s"] for r in got if "ready_s" in r]
        rss = [r["rss_mb"] for r in got if "rss_mb" in r]
        print(f"{name:38s} {shown:12.2f}s {shown / floor:6.1f}x "
              f"{(f'{statistics.median(ready):.2f} s' if ready else '-'):>17s} "
              f"{(f'{statistics.median(rss):.0f} MB' if rss else '-'):>9s}")
    app = statistics.median(r["shown_s"] for r in rows["the app (window first)"])
    print(f"target: window within 3 s -> {'met' if app <= 3.0 else 'NOT met'} ({app:.2f} s)")


if __name__ == "__main__":
    main()
