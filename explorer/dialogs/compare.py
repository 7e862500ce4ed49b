"""File > Compare runs: several runs (or a sweep folder) side by side, as ``main.py compare`` prints them.

Held-out MAP@R per epoch of every run overlaid; a table of each run's best and last epoch with 95 % intervals over
the held-out classes and the difference to the first run (paired when the samples are the same); the settings
that differ; the ROC of each run's best epoch overlaid; and, for runs on the same samples, two maps side by side
with one selection and what changed image by image (explorer/dialogs/compare_images.py). The numbers are computed in the window's job runner (trainer/analysis/compare.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from explorer.widgets.charts import count_chart, set_legend_title
from explorer.widgets.labels import shrinkable
from explorer.widgets.palette import class_colour

JOB = "compare-runs"


def _compare_job(paths: list[str], *, progress, partial, is_cancelled) -> dict:
    from trainer.comparison import compare, load_entries

    progress(0.1, "reading the runs")
    entries = load_entries(paths)
    progress(0.3, f"bootstrapping {len(entries)} runs over their held-out classes")
    result = compare(entries, n_boot=1000)
    result["histories"] = {e.name: sorted(e.history.items()) for e in entries}
    return result


class CompareDialog(QDialog):
    """Pick runs (Add run… / Add sweep…), then compare them."""

    def __init__(self, jobs, parent=None, paths: list[str | Path] | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Compare runs")
        self.resize(1100, 700)
        self.jobs = jobs
        self.result: dict | None = None
        self.runs = QListWidget()
        self.runs.setToolTip("The runs compared, the first is the reference")
        add_run = QPushButton("Add run…")
        add_run.clicked.connect(self.ask_run)
        add_sweep = QPushButton("Add a sweep folder…")
        add_sweep.clicked.connect(self.ask_sweep)
        remove = QPushButton("Remove")
        remove.clicked.connect(lambda: (self.runs.takeItem(self.runs.currentRow()), self.refresh()))
        buttons = QHBoxLayout()
        for b in (add_run, add_sweep, remove):
            buttons.addWidget(b)
        buttons.addStretch(1)
        self.status = shrinkable(QLabel("Add two runs or more (or a sweep folder)."))
        self.chart = count_chart("Held-out MAP@R per epoch", "epoch", y_label="MAP@R")
        self.chart.showGrid(x=True, y=True, alpha=0.2)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["run", "best epoch: MAP@R [95 % interval]", "last epoch",
                                              "vs the first run (best epochs)"])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().hide()
        self.diff = shrinkable(QLabel(""))
        self.diff.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        left = QVBoxLayout()
        left.addLayout(buttons)
        left.addWidget(self.runs, 1)
        lw = QWidget()
        lw.setLayout(left)
        curves = QSplitter(Qt.Orientation.Vertical)
        curves.addWidget(self.chart)
        curves.addWidget(self.table)
        self.roc_chart = pg.PlotWidget(background="w")
        self.roc_chart.setTitle("ROC of each run's best epoch (held-out pairs)")
        self.roc_chart.setLabel("bottom", "false accept rate (FAR, log)")
        self.roc_chart.setLabel("left", "true accept rate (TAR)")
        self.roc_chart.setLogMode(x=True, y=False)
        self.roc_chart.setYRange(0, 1.02)
        self.roc_chart.showGrid(x=True, y=True, alpha=0.2)
        from explorer.dialogs.compare_images import ImageByImage

        self.images = ImageByImage(jobs, self, worker=getattr(getattr(parent, "map_view", None),
                                                               "projection_worker", None))
        self.tabs = QTabWidget()
        self.tabs.addTab(curves, "MAP@R")
        self.tabs.addTab(self.roc_chart, "ROC")
        self.tabs.addTab(self.images, "Image by image")
        right = self.tabs
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(lw)
        split.addWidget(right)
        split.setSizes([200, 1000])
        lay = QVBoxLayout(self)
        lay.addWidget(split, 1)
        lay.addWidget(self.diff)
        lay.addWidget(self.status)
        for p in paths or []:
            self.runs.addItem(str(p))
        if paths:
            self.refresh()

    def paths(self) -> list[str]:
        return [self.runs.item(i).text() for i in range(self.runs.count())]

    def ask_run(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Add a run folder")
        if path:
            self.runs.addItem(path)
            self.refresh()

    def ask_sweep(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Add every run of a sweep folder")
        if path:
            self.runs.addItem(path)
            self.refresh()

    def refresh(self) -> None:
        paths = self.paths()
        if not paths:
            return
        self.status.setText(f"Comparing {len(paths)} folder(s) …")
        self.jobs.submit(JOB, _compare_job, paths, on_result=self._show,
                         on_failed=lambda m: self.status.setText(f"Could not compare: {m.splitlines()[0]}"))

    def _show(self, result: dict) -> None:
        self.result = result
        rows = result["runs"]
        self.chart.clear()
        legend = []
        for i, (name, hist) in enumerate(result["histories"].items()):
            colour = class_colour(i)
            if hist:
                self.chart.plot([e for e, _ in hist], [v for _, v in hist], pen=pg.mkPen(colour, width=2),
                                symbol="o", symbolSize=5, symbolBrush=colour, symbolPen=None)
            legend.append((name, colour))
        set_legend_title(self.chart, "", legend[:12], per_line=4)  # the axis says what is drawn
        self.table.setRowCount(len(rows))

        def cell(v) -> str:
            return "-" if not v else f"{v['map_at_r']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}] @{v['epoch']}"

        for r, row in enumerate(rows):
            vs = row.get("vs_first")
            if r == 0:
                vs_text = "(the reference)"
            elif vs:
                vs_text = (f"{vs['difference']:+.3f} [{vs['ci95'][0]:+.3f}, {vs['ci95'][1]:+.3f}]: "
                           + ("a real difference" if vs["real"] else "within noise"))
            else:
                vs_text = "not paired (other samples)"
            for c, text in enumerate((row["name"], cell(row.get("best")), cell(row.get("last")), vs_text)):
                item = QTableWidgetItem(text)
                item.setToolTip(row["run"])
                self.table.setItem(r, c, item)
        self._show_roc(rows)
        self.images.set_runs(rows)
        diff = {k: v for k, v in result["config_diff"].items() if not k.startswith(("data.data_dir", "data.test_dir"))}
        self.diff.setText("Settings that differ: " + ("; ".join(
            f"{k} = {' / '.join(str(x) for x in vals)}" for k, vals in diff.items()) if diff else "none"))
        self.status.setText(f"{len(rows)} runs; intervals resample the held-out classes ({result['n_boot']} times)")

    def _show_roc(self, rows: list[dict]) -> None:
        self.roc_chart.clear()
        legend = []
        for i, row in enumerate(rows):
            roc = row.get("roc")
            if not roc:
                continue
            far, tar = np.asarray(roc["far"]), np.asarray(roc["tar"])
            ok = far > 0  # FAR = 0 lies left of a log axis
            colour = class_colour(i)
            self.roc_chart.plot(far[ok], tar[ok], pen=pg.mkPen(colour, width=2))
            legend.append((f"{row['name']} (AUC {roc['auc']:.3f})", colour))
        set_legend_title(self.roc_chart, "", legend[:12], per_line=3)

    def done(self, r: int) -> None:
        self.images.shutdown()
        super().done(r)
