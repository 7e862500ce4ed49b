"""The window's entry points on hostile and damaged runs: opening, Continue, and a query with an image file each end
in one clear message naming the problem, never a traceback, and nothing outside the run changes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QLabel, QMessageBox

from explorer.app import create_window, protect_none_refcount
from explorer.settings import Settings
from trainer.store import file_crc32

protect_none_refcount()


@pytest.fixture()
def window(qtbot, tmp_path, monkeypatch):
    from explorer.main_window import MainWindow

    monkeypatch.setattr(MainWindow, "_make_map_view", lambda self: QLabel("map"))
    shown: list[str] = []
    for kind in ("critical", "warning", "information", "question"):
        monkeypatch.setattr(QMessageBox, kind, lambda *a, **k: shown.append(a[2]) or QMessageBox.StandardButton.Ok)
    settings = Settings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    from PySide6.QtWidgets import QApplication

    win = create_window(QApplication.instance(), settings=settings)
    qtbot.addWidget(win)
    win.shown = shown
    yield win
    win.shutdown(10)


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def test_opening_a_run_that_names_a_file_outside_it_is_refused_with_the_entry(window, run, tmp_path):
    outside = tmp_path / "outside.h5"
    outside.write_bytes(b"not yours")
    m = _manifest(run)
    m["epochs"][1]["file"] = os.path.relpath(outside, run)
    (run / "manifest.json").write_text(json.dumps(m))
    assert window.open_run(run) is False
    assert len(window.shown) == 1 and "damaged" in window.shown[0] and "epochs/epoch_0001.h5" in window.shown[0]
    assert "Traceback" not in window.shown[0] and outside.read_bytes() == b"not yours"
    assert window.state.run is None


def test_continue_from_a_checkpoint_missing_a_model_key_ends_in_one_line(qtbot, window, run):
    path = run / "checkpoints" / "epoch_0002.pt"
    state = torch.load(path, weights_only=True)
    state["model"].pop(next(iter(state["model"])))
    torch.save(state, path)
    m = _manifest(run)
    m["checkpoints"][-1].update(size=path.stat().st_size, crc32=file_crc32(path))
    (run / "manifest.json").write_text(json.dumps(m))
    assert window.open_run(run)
    window.config_panel.epochs.setValue(4)
    failed = []
    window.controller.failed.connect(lambda e: failed.append(e.message))
    window.continue_run()
    qtbot.waitUntil(lambda: bool(failed), timeout=60_000)
    assert "Missing key" in failed[0] or "does not fit" in failed[0] or "checkpoint" in failed[0]
    assert "\n" not in failed[0].strip() and "Traceback" not in failed[0]
    log = window.training_view.log_view.toPlainText()
    assert "Traceback" not in log


def test_a_query_with_an_image_on_a_damaged_checkpoint_says_why(qtbot, window, run, trained):
    ck = run / "checkpoints" / "epoch_0002.pt"
    data = bytearray(ck.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ck.write_bytes(bytes(data))
    assert window.open_run(run)
    view = window.neighbours_view
    qtbot.waitUntil(lambda: window.state.epoch == 2, timeout=10_000)
    image = next((trained[1] / "class_0").iterdir())
    view.query_file(image)
    qtbot.waitUntil(lambda: view.info.text().startswith("Could not answer"), timeout=60_000)
    assert "checksum" in view.info.text() and "Traceback" not in view.info.text()


def test_a_run_whose_last_epoch_is_truncated_opens_at_the_one_before_and_the_status_line_says_so(window, run):
    m = _manifest(run)
    last = m["epochs"][-1]
    path = run / last["file"]
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    assert window.open_run(run) is True
    assert window.state.run.epochs[-1] == m["epochs"][-2]["epoch"]
    text = window.status_label.text()
    assert f"ignored epoch {last['epoch']}" in text and "wrong size" in text
    assert f"ignored epoch {last['epoch']}" in window.status_label.toolTip()
    window.show_status("something else")
    assert window.status_label.toolTip() == ""  # the note of the damaged run does not stay
