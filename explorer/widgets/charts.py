"""What the views' charts share: counts (epochs, batches) on whole-number axes, and legends under the title.

With one epoch the held-out chart's x axis ran -400..400 "epoch (x0.001)"; epochs and batches got fractional
ticks; legends were drawn over the data lines. Here an epoch or batch axis only ticks whole numbers, never scales
itself by an SI prefix, and spans at least a few units; a legend is part of the chart's title, above the data.
"""

from __future__ import annotations

import math
from html import escape

import pyqtgraph as pg


class CountAxis(pg.AxisItem):
    """An axis of whole numbers (epochs, batches): ticks only at integers, printed as integers."""

    def __init__(self, orientation: str = "bottom", **kwargs) -> None:
        super().__init__(orientation, **kwargs)
        self.enableAutoSIPrefix(False)

    def tickValues(self, minVal, maxVal, size):  # noqa: N802, N803 - pyqtgraph names
        return count_ticks(minVal, maxVal, size)

    def tickStrings(self, values, scale, spacing):  # noqa: N802 - pyqtgraph name
        return [f"{int(round(v)):,}" for v in values]


def count_ticks(lo: float, hi: float, size_px: float, min_px: int = 60) -> list[tuple[float, list[float]]]:
    """pyqtgraph's tick levels for integers in [lo, hi]: one level, a 1-2-5 step with about ``min_px`` pixels
    between ticks and never less than 1."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        return []
    span = max(hi - lo, 1e-9)
    wanted = max(1.0, span * min_px / max(size_px, 1.0))
    step = min(b * 10 ** e for b in (1, 2, 5) for e in range(15) if b * 10 ** e >= wanted)
    first = math.ceil(lo / step) * step
    ticks = [float(v) for v in range(int(first), int(math.floor(hi)) + 1, int(step))]
    return [(float(step), ticks)]


def count_chart(title: str, x_label: str, *, y_label: str = "", background: str = "w") -> pg.PlotWidget:
    """A chart whose x axis counts epochs or batches (see the module docstring)."""
    plot = pg.PlotWidget(background=background, axisItems={"bottom": CountAxis("bottom")})
    plot.setTitle(title)
    plot.setLabel("bottom", x_label)
    if y_label:
        plot.setLabel("left", y_label)
    plot.getPlotItem().getViewBox().setLimits(minXRange=2)  # one epoch: a few units around it, not +-400
    plot.getPlotItem().getAxis("left").enableAutoSIPrefix(False)  # "MAP@R (x0.001)" helps nobody
    return plot


def set_legend_title(plot: pg.PlotWidget, title: str, entries: list[tuple[str, object]], *,
                     dashed: set[str] = frozenset(), per_line: int = 5) -> None:
    """Put ``title`` and a legend of ``(name, colour)`` entries in the chart's title line (dashed entries drawn
    with a dashed mark), instead of a legend box over the data."""
    marks = []
    for name, color in entries:
        mark = "╌" if name in dashed else "━"
        css = pg.mkColor(color).name()  # "#rrggbb" from any colour pyqtgraph takes
        marks.append(f"<span style='color:{css}'>{mark}</span>&nbsp;{escape(name)}")
    legend = "<br>".join("&nbsp;&nbsp; ".join(marks[i:i + per_line]) for i in range(0, len(marks), per_line))
    # on a line of its own under the title: one long line made the chart (and the window) wider
    body = f"<span style='font-size:8pt'>{legend}</span>" if legend else ""
    plot.setTitle(escape(title) + ("<br>" if title and body else "") + body)
