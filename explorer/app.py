"""Application start-up: a friendly check of Qt's display libraries, QApplication, the main window, clean quit.

Qt aborts the whole process with a terse "could not load the Qt platform plugin xcb" when a system library is
missing, so on Linux we look for those libraries first and say which apt packages to install.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

ORGANIZATION = "EmbeddingExplorer"
APPLICATION = "EmbeddingExplorer"
STYLE_SHEET = Path(__file__).resolve().parent.parent / "resources" / "style.qss"

# shared library Qt's xcb plugin loads -> the Debian/Ubuntu package that ships it
XCB_LIBRARIES: dict[str, str] = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libdbus-1.so.3": "libdbus-1-3",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
}


_NONE_GUARD = 1 << 40


def protect_none_refcount() -> bool:
    """Work around shiboken6 6.12 returning ``None`` (and ``True``/``False``) without a new reference (Python < 3.12).

    Every void Qt call (``setPen``, ``drawLine``, ``setObjectName``...) then drops one reference to ``None``; a
    plotting GUI spends the ~65,000 references a process holds within minutes and CPython aborts with
    "none_dealloc: deallocating None". From Python 3.12 ``None`` is immortal and nothing is done. Here we add
    2**40 references to each once (never released), which no session can spend. Returns True if it acted.
    """
    if sys.version_info >= (3, 12) or getattr(protect_none_refcount, "done", False):
        return False
    try:  # only the affected release: pyproject.toml excludes it, but a user may have it installed anyway
        import shiboken6

        if not str(getattr(shiboken6, "__version__", "")).startswith("6.12.0"):
            return False
    except ImportError:
        return False
    for singleton in (None, True, False):  # bool-returning methods drop references to True/False the same way
        refcnt = ctypes.c_ssize_t.from_address(id(singleton))  # ob_refcnt is PyObject's first field
        refcnt.value += _NONE_GUARD
    protect_none_refcount.done = True  # type: ignore[attr-defined]
    return True


def collect_garbage_in_gui_thread(app, interval_s: float = 1.0):
    """Collect reference cycles only on the GUI thread, on a timer, and never in a worker thread.

    Python's cyclic collector runs in whichever thread allocates when a threshold is passed: the trainer, the
    learning-rate finder or the sweep thread. A cycle holding a Qt object (a closed dialog, a plot item) is then
    destroyed there, and Qt aborts the process or deadlocks. pyqtgraph's ``GarbageCollector`` turns automatic
    collection off and collects on a QTimer instead, so in the thread that owns the widgets. If something else
    turns collection on again (the projection turns it off and on around numba's compilation), it is turned off at
    the next tick. Returns the collector (keep a reference: it owns the timer); ``stop()`` gives collection back.
    """
    import gc

    from pyqtgraph.util.garbage_collector import GarbageCollector

    class _GuiThreadCollector(GarbageCollector):
        def check(self) -> None:
            if gc.isenabled():
                gc.disable()
            super().check()

        def stop(self) -> None:
            self.timer.stop()
            self.timer.deleteLater()
            gc.enable()
            gc.collect()

    collector = _GuiThreadCollector(interval=interval_s)
    collector.timer.setParent(app)
    return collector


def missing_xcb_libraries(load: Callable[[str], object] = ctypes.CDLL) -> list[tuple[str, str]]:
    """(library, apt package) for each library of Qt's xcb plugin that cannot be loaded here."""
    missing = []
    for lib, package in XCB_LIBRARIES.items():
        try:
            load(lib)
        except OSError:
            missing.append((lib, package))
    return missing


def display_problem(env: Mapping[str, str] | None = None, *, platform: str = sys.platform,
                    load: Callable[[str], object] = ctypes.CDLL) -> str | None:
    """A plain-words reason the window cannot open on this machine (None if it should open)."""
    env = os.environ if env is None else env
    if not platform.startswith("linux"):
        return None
    qpa = env.get("QT_QPA_PLATFORM", "")
    if qpa and not qpa.startswith("xcb"):
        return None  # offscreen, wayland, vnc...: the user chose; Qt's own message is specific enough
    if not qpa and env.get("WAYLAND_DISPLAY"):
        return None
    if not env.get("DISPLAY"):
        return ("Embedding Explorer needs a graphical display, and none was found (DISPLAY is not set).\n"
                "Start it from a desktop session, use `ssh -X`, or train headless from the command line:\n"
                "    python main.py train --help")
    missing = missing_xcb_libraries(load)
    if not missing:
        return None
    packages = " ".join(sorted({pkg for _, pkg in missing}))
    libs = ", ".join(lib for lib, _ in missing)
    return ("Qt cannot open a window: system libraries it needs are missing:\n"
            f"    {libs}\n"
            "On Debian or Ubuntu install them with:\n"
            f"    sudo apt-get install {packages}\n"
            "(Other distributions ship the same libraries under similar names.)\n"
            "Training also works without a window: python main.py train --help")


# Modules the analysis views and the map import on first use in their worker threads. An import runs Python and C
# initialisation under the GIL, so the first map stalled the GUI thread for ~300 ms (bench_gui_latency); importing
# them before the window shows costs ~0.8 s of start-up instead. The census's numba kernels are loaded then too.
PRELOADED_MODULES = ("sklearn.decomposition", "faiss", "numba", "trainer.analysis.census", "trainer.analysis.index",
                     "trainer.train.engine", "trainer.analysis.pairs", "trainer.inference", "trainer.analysis.projection")


def preload_modules(names: Sequence[str] = PRELOADED_MODULES, *, warm_census: bool = True) -> list[str]:
    """Import ``names`` now; returns those that failed to import. ``warm_census`` also loads the census's numba
    kernels, which must happen on the GUI thread (numba and a garbage collection in another thread can clash)."""
    import importlib

    failed = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # a missing optional library surfaces where it is used, with its own message
            failed.append(name)
    if warm_census and "trainer.analysis.census" in names and "trainer.analysis.census" not in failed:
        try:  # numba loads the census kernels under the GIL (~0.4 s): a stall of the first census otherwise
            importlib.import_module("trainer.analysis.census").warm_up()
        except Exception:
            failed.append("trainer.analysis.census kernels")
    return failed


def create_window(app, *, demo: bool = False, folder: str | Path | None = None, run: str | Path | None = None,
                  settings=None, preload: bool = True):
    """Build the main window on ``app``, wire quit to stop the workers, and open what was asked for.

    ``preload`` imports the heavy libraries first, on this thread (tests); the app shows its window first and
    imports them in the background (:func:`preload_in_background`)."""
    from explorer.main_window import MainWindow

    protect_none_refcount()
    if preload:
        preload_modules()
    if STYLE_SHEET.is_file() and not app.styleSheet():
        app.setStyleSheet(STYLE_SHEET.read_text(encoding="utf-8"))
    window = MainWindow(settings=settings)
    app.aboutToQuit.connect(window.shutdown)  # the trainer commits or drops its batch; jobs are cancelled
    if run is not None:
        window.open_run(run)
    elif folder is not None:
        window.open_folder(folder)
    elif demo:
        window.open_demo()
    return window


def run_app(argv: Sequence[str] | None = None, *, demo: bool = False, folder: str | Path | None = None,
            run: str | Path | None = None, compare: Sequence[str] | None = None) -> int:
    """Start the desktop app and return its exit code (1 with an explanation if no window can open)."""
    problem = display_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    from PySide6.QtWidgets import QApplication

    protect_none_refcount()
    app = QApplication.instance() or QApplication(list(argv if argv is not None else sys.argv))
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName("Embedding Explorer")
    app._collector = collect_garbage_in_gui_thread(app)  # before any worker thread starts
    window = create_window(app, demo=demo, folder=folder, run=run, preload=False)
    window.show()  # on screen before PyTorch, faiss and numba load (that took 30-45 s of black screen cold)
    thread = preload_in_background(window)
    if compare:  # main.py --compare RUN...: the runs side by side as soon as the window is up
        from PySide6.QtCore import QTimer

        QTimer.singleShot(0, lambda: window.open_compare_dialog(list(compare)))
    probe = os.environ.get(STARTUP_PROBE)
    if probe:  # bench/startup.py: when the window was on screen and when the libraries were loaded, then quit
        _report_startup(app, window, thread, Path(probe))
    return int(app.exec())


STARTUP_PROBE = "EMBEDDING_EXPLORER_STARTUP_PROBE"  # a file to write start-up times to (the benchmark)


def _report_startup(app, window, thread, path: Path) -> None:
    import json

    from PySide6.QtCore import QTimer

    t0 = float(os.environ.get("EMBEDDING_EXPLORER_T0", "0") or 0)
    times: dict[str, float] = {}

    def shown() -> None:
        times["shown_s"] = time.time() - t0
        wait_ready()

    def wait_ready() -> None:
        if thread.is_alive():
            QTimer.singleShot(50, wait_ready)
            return
        times["ready_s"] = time.time() - t0
        try:
            import resource

            times["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        except ImportError:  # pragma: no cover - Windows
            pass
        path.write_text(json.dumps(times))
        window.close()
        app.quit()

    QTimer.singleShot(0, shown)  # the first turn of the event loop: the window has been shown and painted


def preload_in_background(window):
    """Import :data:`PRELOADED_MODULES` in a thread while the window is on screen, saying so in its status bar."""
    import threading

    from PySide6.QtCore import QTimer

    started = time.perf_counter()
    window.show_status("Loading PyTorch and the analysis libraries in the background …")
    done: list[list[str]] = []

    def work() -> None:
        done.append(preload_modules(warm_census=False))

    thread = threading.Thread(target=work, name="embedding-explorer-preload", daemon=True)
    thread.start()

    def check() -> None:
        if thread.is_alive():
            QTimer.singleShot(200, check)
            return
        failed = done[0] if done else []
        failed += preload_modules(("trainer.analysis.census",))  # its numba kernels, here on the GUI thread
        if window.status_label.text().startswith("Loading PyTorch"):  # not replaced by a newer message
            window.show_status(f"Ready ({time.perf_counter() - started:.1f} s to load the libraries)"
                               + (f"; could not load {', '.join(failed)}" if failed else ""))

    QTimer.singleShot(200, check)
    return thread


if __name__ == "__main__":  # pragma: no cover - `python -m explorer.app [folder]`
    args = sys.argv[1:]
    sys.exit(run_app(sys.argv, folder=args[0] if args else None))
