"""Class colours, shared by the map and the plots.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QColor, QIcon, QPixmap

# Colour-blind-friendly-ish categorical palette (Tableau 20 order: strong colours first).
PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
    (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (199, 199, 199),
    (219, 219, 141), (158, 218, 229),
]


def class_colour(i: int) -> tuple[int, int, int]:
    """Colour of class ``i`` (the palette repeats after 20 classes)."""
    return PALETTE[int(i) % len(PALETTE)]


def palette_rgba(n: int, alpha: int = 255):
    """(n, 4) uint8 colours of classes 0..n-1, the palette repeated (one array op, not n tuples)."""
    table = np.array([(*rgb, alpha) for rgb in PALETTE], np.uint8)
    return table[np.arange(max(int(n), 0)) % len(PALETTE)]


_ICONS: dict = {}


def class_icon(i: int):
    """A 12 x 12 swatch of class ``i``'s colour (one QIcon per palette colour, shared: a legend of 2,000 classes
    drew 2,000 pixmaps)."""
    rgb = class_colour(i)
    icon = _ICONS.get(rgb)
    if icon is None:
        pm = QPixmap(12, 12)
        pm.fill(QColor(*rgb))
        icon = _ICONS[rgb] = QIcon(pm)
    return icon
