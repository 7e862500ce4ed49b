"""explorer/widgets/labels.py: labels that take the room their wrapped lines need and never widen the window."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel

from explorer.widgets.labels import room_for_lines, shrinkable


def test_room_for_lines_holds_that_many_wrapped_lines_of_readout_text(qtbot):
    text = ("FAR 8.33 % – 20.8 % (sd 5.46 %; highest class_06); FRR 0 % – 33.3 % (sd 12.4 %; highest class_06) — "
            "one threshold is stricter for some classes than for others")
    probe = QLabel(text)
    probe.setWordWrap(True)
    qtbot.addWidget(probe)
    # the heights the text takes as it wraps to 1, 2, 3, ... lines (narrower and narrower)
    by_lines = sorted({probe.heightForWidth(w) for w in range(60, 3000, 7)})
    for lines in (1, 2, 3):
        label = room_for_lines(shrinkable(QLabel(text)), lines)
        qtbot.addWidget(label)
        assert label.minimumHeight() >= by_lines[lines - 1], (lines, label.minimumHeight(), by_lines[:4])
        assert label.minimumHeight() < by_lines[lines - 1] + label.fontMetrics().lineSpacing()  # not a line more
    assert label.minimumWidth() <= 1  # it asks for no width of its own
