"""GUI tests: a question box never blocks a test (offscreen, nobody answers it); a test that wants to see the
question patches QMessageBox.question itself."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def no_modal_questions(monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
