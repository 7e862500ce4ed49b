"""GUI tests: a question box never blocks a test (offscreen, nobody answers it); a test that wants to see the
question patches QMessageBox.question itself."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def no_modal_questions(monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)


@pytest.fixture(autouse=True)
def garbage_collected_in_the_gui_thread(qapp):
    """As in the app (explorer.app.run_app): cycles are collected on the GUI thread only, so no worker thread of a
    test (trainer, learning-rate finder, sweep) destroys a widget that an earlier test left to the collector."""
    import gc

    from explorer.app import collect_garbage_in_gui_thread

    gc.collect()
    collector = collect_garbage_in_gui_thread(qapp, interval_s=0.5)
    yield collector
    collector.stop()
