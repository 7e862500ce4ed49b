"""The colours of same-class, other-class, query and new neighbours, and thumbnails framed in them.
"""

from __future__ import annotations

from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QColor, QPainter, QPen, QPixmap

SAME = QColor(44, 160, 44)
OTHER = QColor(214, 39, 40)
QUERY = QColor(31, 119, 180)
NEW = QColor(255, 140, 0)


def framed_pixmap(pm: QPixmap | None, colour: QColor, size: int, *, width: int = 4, badge: str = "") -> QPixmap:
    """``pm`` scaled into a size x size square with a coloured frame (grey placeholder while loading)."""
    out = QPixmap(size, size)
    out.fill(QColor(245, 245, 245))
    p = QPainter(out)
    if pm is not None and not pm.isNull():
        inner = size - 2 * width
        scaled = pm.scaled(inner, inner, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
        p.drawPixmap((size - scaled.width()) // 2, (size - scaled.height()) // 2, scaled)
    else:
        p.setPen(QColor(150, 150, 150))
        p.drawText(out.rect(), Qt.AlignmentFlag.AlignCenter, "…")
    pen = QPen(colour)
    pen.setWidth(width)
    p.setPen(pen)
    p.drawRect(width // 2, width // 2, size - width, size - width)
    if badge:
        f = p.font()
        f.setBold(True)
        p.setFont(f)
        rect = p.fontMetrics().boundingRect(badge).adjusted(-3, -1, 3, 1)
        rect.moveTopLeft(QPoint(width, width))
        p.fillRect(rect, NEW)
        p.setPen(QColor("white"))
        p.drawText(rect, Qt.AlignmentFlag.AlignCenter, badge)
    p.end()
    return out
