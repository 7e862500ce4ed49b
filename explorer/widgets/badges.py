"""Edit marks on thumbnails: every view that shows an image shows whether it is excluded, relabelled or marked as a
duplicate (the map draws its own marks). ``badged(pixmap, mark)`` returns a copy with the mark painted on."""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPen, QPixmap

COLOURS = {"exclude": QColor("#d62728"), "relabel": QColor("#1f77b4"), "duplicate": QColor("#7f7f7f")}
WORDS = {"exclude": "excluded", "relabel": "relabelled", "duplicate": "duplicate"}


def badged(pm: QPixmap | None, mark: tuple[str, str] | None) -> QPixmap | None:
    """``pm`` with ``mark`` painted on: excluded images greyed and crossed out, relabelled and duplicate ones with a
    tag of the new class / "dup" along the bottom. None and unmarked pixmaps come back as they are."""
    if pm is None or pm.isNull() or not mark:
        return pm
    action, text = mark
    out = QPixmap(pm)
    p = QPainter(out)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    w, h = out.width() / out.devicePixelRatio(), out.height() / out.devicePixelRatio()
    colour = COLOURS.get(action, QColor("#555"))
    if action == "exclude":
        p.fillRect(QRectF(0, 0, w, h), QColor(255, 255, 255, 140))
        p.setPen(QPen(colour, max(2.0, w / 24)))
        p.drawLine(int(w * 0.15), int(h * 0.15), int(w * 0.85), int(h * 0.85))
        p.drawLine(int(w * 0.85), int(h * 0.15), int(w * 0.15), int(h * 0.85))
    else:
        band = max(12.0, h / 5)
        p.fillRect(QRectF(0, h - band, w, band), colour)
        font = QFont()
        font.setPixelSize(int(band * 0.75))
        p.setFont(font)
        p.setPen(QColor("white"))
        label = f"→ {text}" if action == "relabel" else "dup"
        p.drawText(QRectF(2, h - band, w - 4, band), int(Qt.AlignmentFlag.AlignCenter), label)
    p.end()
    return out


def mark_words(mark: tuple[str, str] | None) -> str:
    """A short phrase for tooltips and item texts ("excluded", "relabelled as cat", "duplicate of #12")."""
    if not mark:
        return ""
    action, text = mark
    if action == "relabel":
        return f"relabelled as {text}"
    if action == "duplicate":
        return f"duplicate of {text}"
    return WORDS.get(action, action)
