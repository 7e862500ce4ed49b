"""The charts' count axes and title legends (issue 15 item 14)."""

from __future__ import annotations

import math

import pytest

from explorer.widgets.charts import CountAxis, count_chart, count_ticks, set_legend_title


def _brute_ticks(lo, hi, size_px, min_px=60):
    """Every integer multiple of the smallest 1-2-5 step that leaves ``min_px`` pixels between ticks."""
    span = max(hi - lo, 1e-9)
    steps = sorted(b * 10 ** e for b in (1, 2, 5) for e in range(15))
    step = next(s for s in steps if s * size_px / span >= min_px)
    return [float(v) for v in range(math.floor(lo) - 1, math.ceil(hi) + 2) if lo <= v <= hi and v % step == 0]


@pytest.mark.parametrize("lo,hi,px", [(-0.5, 1.5, 400), (0, 1, 300), (-400, 400, 300), (0, 3000, 500),
                                       (3.2, 97.9, 250), (0, 10, 1000), (-7, -2, 200)])
def test_count_ticks_are_integers_on_a_1_2_5_step_like_a_brute_force_scan(lo, hi, px):
    (step, ticks), = count_ticks(lo, hi, px)
    assert step >= 1 and all(t == int(t) for t in ticks)
    assert ticks == _brute_ticks(lo, hi, px)
    assert len(ticks) <= max(2, px / 60 + 1)


def test_an_epoch_chart_with_one_point_spans_a_few_epochs_and_prints_whole_numbers(qtbot):
    plot = count_chart("Metrics per epoch", "epoch")
    qtbot.addWidget(plot)
    plot.resize(500, 300)
    plot.plot([0], [0.4], symbol="o")
    plot.show()
    qtbot.wait(50)
    (x0, x1), _ = plot.getPlotItem().getViewBox().viewRange()
    assert x1 - x0 >= 2 - 1e-9 and x0 <= 0 <= x1  # one epoch: not -400..400 "epoch (x0.001)"
    axis = plot.getPlotItem().getAxis("bottom")
    assert isinstance(axis, CountAxis) and not axis.autoSIPrefix
    assert axis.tickStrings([0.0, 1.0, 1000.0], 1, 1) == ["0", "1", "1,000"]


def test_a_legend_is_in_the_title_line_not_over_the_data(qtbot):
    plot = count_chart("Miner", "batch")
    qtbot.addWidget(plot)
    set_legend_title(plot, "Miner", [("easy", "#2ca02c"), ("hard", (214, 39, 40))], dashed={"hard"})
    title = plot.getPlotItem().titleLabel.text
    assert "easy" in title and "#2ca02c" in title and "#d62728" in title and "╌" in title
    assert plot.getPlotItem().legend is None
