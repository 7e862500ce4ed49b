"""JobRunner: results arrive on the GUI thread, a newer job cancels the older one and its late results are dropped."""

from __future__ import annotations

import threading
import time


from explorer.jobs import JobRunner



def _slow(tag, gate: threading.Event, *, progress, partial, is_cancelled):
    partial(f"{tag}-partial")
    gate.wait(5)
    progress(1.0, "done")
    return tag


def test_result_and_partial_arrive_on_the_gui_thread(qtbot):
    runner = JobRunner()
    seen = []
    runner.partial.connect(lambda k, r: seen.append(("partial", k, r, threading.current_thread() is threading.main_thread())))
    gate = threading.Event()
    gate.set()
    with qtbot.waitSignal(runner.finished, timeout=5000) as blocker:
        runner.submit("a", _slow, "x", gate)
    assert blocker.args == ["a", "x"]
    assert seen == [("partial", "a", "x-partial", True)]
    assert not runner.is_running("a")
    assert runner.shutdown(2)


def test_new_submit_cancels_old_and_drops_its_stale_result(qtbot):
    runner = JobRunner(max_threads=2)
    results = []
    runner.finished.connect(lambda k, r: results.append((k, r)))
    flags = []
    old_gate = threading.Event()

    def old(*, progress, partial, is_cancelled):
        old_gate.wait(5)
        flags.append(is_cancelled())
        return "old"  # returned after cancellation: must be dropped

    runner.submit("map", old)
    time.sleep(0.05)
    new_gate = threading.Event()
    new_gate.set()
    with qtbot.waitSignal(runner.finished, timeout=5000):
        runner.submit("map", _slow, "new", new_gate)
    old_gate.set()
    assert runner.wait(5000)
    qtbot.wait(50)  # let any late queued delivery run
    assert results == [("map", "new")]
    assert flags == [True]


def test_failure_is_reported_not_raised_and_other_keys_are_independent(qtbot):
    runner = JobRunner()
    got = {}
    runner.failed.connect(lambda k, m: got.setdefault("failed", (k, m)))
    runner.finished.connect(lambda k, r: got.setdefault(k, r))

    def boom(*, progress, partial, is_cancelled):
        raise ValueError("bad file /x/y.png: truncated")

    gate = threading.Event()
    gate.set()
    runner.submit("a", boom)
    runner.submit("b", _slow, "fine", gate)
    qtbot.waitUntil(lambda: "failed" in got and "b" in got, timeout=5000)
    assert got["failed"][0] == "a" and "truncated" in got["failed"][1]
    assert got["b"] == "fine"


def test_cancel_and_shutdown_stop_delivery(qtbot):
    runner = JobRunner()
    results = []
    runner.finished.connect(lambda k, r: results.append(r))
    gate = threading.Event()
    runner.submit("k", _slow, "late", gate)
    runner.cancel("k")
    assert not runner.is_running("k")
    gate.set()
    assert runner.shutdown(5)
    qtbot.wait(50)
    assert results == []
    # a late request after shutdown (a debounce timer while the window closes) is dropped, never run
    assert runner.submit("k", _slow, "x", gate) == -1
    qtbot.wait(50)
    assert results == []
