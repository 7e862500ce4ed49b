"""JobRunner: results arrive on the GUI thread at the callbacks of their own job, a newer job cancels the older one
and its late results are dropped, one job's failure leaves the others alone."""

from __future__ import annotations

import threading
import time

from explorer.jobs import JobRunner


def _slow(tag, gate: threading.Event, *, progress, partial, is_cancelled):
    partial(f"{tag}-partial")
    gate.wait(5)
    progress(1.0, "done")
    return tag


def test_result_partial_and_progress_reach_their_jobs_callbacks_on_the_gui_thread(qtbot):
    runner = JobRunner()
    seen = []
    on_gui = lambda: threading.current_thread() is threading.main_thread()  # noqa: E731
    gate = threading.Event()
    gate.set()
    runner.submit("a", _slow, "x", gate, on_result=lambda r: seen.append(("result", r, on_gui())),
                  on_partial=lambda r: seen.append(("partial", r, on_gui())),
                  on_progress=lambda f, t: seen.append(("progress", f, t, on_gui())))
    qtbot.waitUntil(lambda: any(s[0] == "result" for s in seen), timeout=5000)
    assert seen == [("partial", "x-partial", True), ("progress", 1.0, "done", True), ("result", "x", True)]
    assert not runner.is_running("a")
    assert runner.shutdown(2)


def test_new_submit_cancels_old_and_drops_its_stale_result(qtbot):
    runner = JobRunner(max_threads=2)
    results = []
    flags = []
    old_gate = threading.Event()

    def old(*, progress, partial, is_cancelled):
        old_gate.wait(5)
        flags.append(is_cancelled())
        return "old"  # returned after cancellation: must be dropped

    runner.submit("map", old, on_result=lambda r: results.append(("old job", r)))
    time.sleep(0.05)
    new_gate = threading.Event()
    new_gate.set()
    runner.submit("map", _slow, "new", new_gate, on_result=lambda r: results.append(("new job", r)))
    qtbot.waitUntil(lambda: bool(results), timeout=5000)
    old_gate.set()
    assert runner.wait(5000)
    qtbot.wait(50)  # let any late queued delivery run
    assert results == [("new job", "new")]
    assert flags == [True]


def test_failure_is_reported_not_raised_and_other_keys_are_independent(qtbot):
    runner = JobRunner()
    got = {}

    def boom(*, progress, partial, is_cancelled):
        raise ValueError("bad file /x/y.png: truncated")

    gate = threading.Event()
    gate.set()
    runner.submit("a", boom, on_result=lambda r: got.setdefault("a", r), on_failed=lambda m: got.setdefault("failed", m))
    runner.submit("b", _slow, "fine", gate, on_result=lambda r: got.setdefault("b", r),
                  on_failed=lambda m: got.setdefault("b failed", m))
    qtbot.waitUntil(lambda: "failed" in got and "b" in got, timeout=5000)
    assert "truncated" in got["failed"] and "a" not in got and "b failed" not in got
    assert got["b"] == "fine"


def test_cancel_and_shutdown_stop_delivery(qtbot):
    runner = JobRunner()
    results = []
    gate = threading.Event()
    runner.submit("k", _slow, "late", gate, on_result=results.append)
    runner.cancel("k")
    assert not runner.is_running("k")
    gate.set()
    assert runner.shutdown(5)
    qtbot.wait(50)
    assert results == []
    # a late request after shutdown (a debounce timer while the window closes) is dropped, never run
    assert runner.submit("k", _slow, "x", gate, on_result=results.append) == -1
    qtbot.wait(50)
    assert results == []


def test_a_long_job_of_one_runner_does_not_queue_another_runners_job(qtbot):
    """Each view owns a runner: a census that holds every thread of its runner leaves a neighbour search free."""
    busy, free = JobRunner(max_threads=1), JobRunner(max_threads=1)
    hold = threading.Event()
    done = []
    busy.submit("census", _slow, "census", hold, on_result=done.append)
    gate = threading.Event()
    gate.set()
    free.submit("search", _slow, "search", gate, on_result=done.append)
    qtbot.waitUntil(lambda: done == ["search"], timeout=5000)
    hold.set()
    qtbot.waitUntil(lambda: done == ["search", "census"], timeout=5000)
    assert busy.shutdown(2) and free.shutdown(2)


def test_a_long_job_gives_the_heaps_free_pages_back_when_it_ends(qtbot, monkeypatch):
    import platform

    import explorer.jobs as jobs_mod

    trims = []
    monkeypatch.setattr(jobs_mod, "give_back_free_memory", lambda: trims.append(True) or True)
    monkeypatch.setattr(jobs_mod, "TRIM_AFTER_S", 0.2)
    runner = JobRunner()
    done = []

    def job(seconds, *, progress, partial, is_cancelled):
        time.sleep(seconds)
        return seconds

    runner.submit("quick", job, 0.0, on_result=done.append)
    qtbot.waitUntil(lambda: done == [0.0], timeout=5000)
    qtbot.waitUntil(lambda: not runner.is_running("quick"), timeout=5000)
    assert trims == []  # a short job leaves the heap alone (a trim walks every arena)
    runner.submit("long", job, 0.3, on_result=done.append)
    qtbot.waitUntil(lambda: len(done) == 2, timeout=5000)
    qtbot.waitUntil(lambda: trims == [True], timeout=5000)
    assert runner.shutdown(2)
    monkeypatch.undo()
    if platform.libc_ver()[0] == "glibc":  # glibc has malloc_trim: the real call runs
        assert jobs_mod.give_back_free_memory() is True
