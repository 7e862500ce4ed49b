"""The live embedding map: a 2-D UMAP/PCA/t-SNE layout of each committed epoch, stable from epoch to epoch.

After each committed epoch a background job loads the embeddings and projects them, warm-started from the map on
screen (trainer.analysis.projection), so points move only as far as their embeddings changed. Drawing: with few points in
view the points are pyqtgraph symbols (one shared ScatterPlotItem, shared brushes, cached symbol pixmaps); with many
points in view they are splatted into one RGBA image at screen resolution (numpy), re-rendered when the view range
settles, which keeps pan/zoom fluid with a million points. Hover shows the image, click/shift-drag selects, the
selection and highlights are shared with the other views through the AppState.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QPointF, QRectF, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QColor, QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QMenu,
    QProgressBar,
    QSlider,
    QSplitter,
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
    QGraphicsRectItem,
)
from explorer.jobs import JobRunner
from explorer.state import AppState
from explorer.widgets.thumbnails import ThumbnailCache
from trainer.analysis import projection
from trainer.analysis.projection_worker import ProjectionWorker
from explorer.views.map.geometry import Frame, draw_frame, draw_order, frame_job, points_in_polygon, view_needs_fit
from explorer.views.map.jobs import METHOD_TITLES, _warm_up_job, map_job
from explorer.views.map.legend import LegendModel
from explorer.widgets.palette import PALETTE, class_colour, palette_rgba

# Points in view above which the map is drawn as a raster image instead of symbols. ScatterPlotItem.setData builds
# each spot in Python on the GUI thread: ~300 ms for 20,000 points (bench_gui_scale), ~15 ms per 1,000.
SYMBOL_MAX = 5_000
# Largest map that is animated from the old to the new layout (setData per frame costs ~N).
ANIMATE_MAX = 20_000
ANIMATE_MS = 300
# Raster maps re-render this long after the view stops moving; the raster covers this many view sizes around it.
RENDER_REST_MS = 120
RASTER_MARGIN = 0.35
# Maps of this many points or more are drawn in a thread of their own (see _render).
RASTER_ASYNC_MIN = 200_000
HOVER_RADIUS_PX = 8.0
SPLIT_SYMBOLS = ("o", "t1")  # train: circle, held-out: upward triangle
SPLIT_NAMES = ("train", "held-out")
PLACEHOLDER_WAITING = "The map appears after the first epoch is committed."
PLACEHOLDER_FAILED = ("No map: the map of epoch {epoch} could not be computed (the reason is below the plot).\n"
                      "Another method or epoch may work; reopening the run tries again.")


class _MapViewBox(pg.ViewBox):
    """ViewBox whose shift-drag draws a selection box and alt-drag (or lasso mode) a free-hand lasso, not a pan."""

    sigBoxSelected = Signal(object, bool)  # QRectF in data coordinates, additive (ctrl held)
    sigLassoSelected = Signal(object, bool)  # (M, 2) polygon in data coordinates, additive (ctrl held)

    def __init__(self) -> None:
        super().__init__(enableMenu=False)
        self.setAspectLocked(True)
        self._band = QGraphicsRectItem()
        self._band.setPen(pg.mkPen((40, 40, 40), width=1, style=Qt.PenStyle.DashLine, cosmetic=True))
        self._band.setBrush(pg.mkBrush(40, 120, 220, 40))
        self._band.setZValue(1e9)
        self._band.hide()
        self.addItem(self._band, ignoreBounds=True)
        self.lasso_mode = False  # plain left-drag draws a lasso (toolbar toggle)
        self._lasso_pts: list[tuple[float, float]] = []
        self._lasso = pg.PlotCurveItem(pen=pg.mkPen((40, 40, 40), width=1.5, style=Qt.PenStyle.DashLine),
                                       fillLevel=None, brush=None)
        self._lasso.setZValue(1e9)
        self._lasso.hide()
        self.addItem(self._lasso, ignoreBounds=True)

    def mouseDragEvent(self, ev, axis=None) -> None:  # noqa: N802 - Qt naming
        mods = ev.modifiers()
        if ev.button() == Qt.MouseButton.LeftButton and (
                mods & Qt.KeyboardModifier.AltModifier or (self.lasso_mode and not mods & Qt.KeyboardModifier.ShiftModifier)):
            ev.accept()
            if ev.isStart():
                p0 = self.mapToView(ev.buttonDownPos())
                self._lasso_pts = [(p0.x(), p0.y())]
            p = self.mapToView(ev.pos())
            self._lasso_pts.append((p.x(), p.y()))
            pts = np.array(self._lasso_pts + self._lasso_pts[:1], np.float64)
            if ev.isFinish():
                self._lasso.hide()
                self.sigLassoSelected.emit(pts[:-1].copy(), bool(mods & Qt.KeyboardModifier.ControlModifier))
                self._lasso_pts = []
            else:
                self._lasso.setData(x=pts[:, 0], y=pts[:, 1])
                self._lasso.show()
            return
        if ev.button() == Qt.MouseButton.LeftButton and ev.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            ev.accept()
            p0 = self.mapToView(ev.buttonDownPos())
            p1 = self.mapToView(ev.pos())
            rect = QRectF(p0, p1).normalized()
            if ev.isFinish():
                self._band.hide()
                additive = bool(ev.modifiers() & Qt.KeyboardModifier.ControlModifier)
                self.sigBoxSelected.emit(rect, additive)
            else:
                self._band.setRect(rect)
                self._band.show()
            return
        super().mouseDragEvent(ev, axis)


class MapView(QWidget):
    """2-D map of an epoch's embeddings, coloured by class; selection is shared through the AppState."""

    map_ready = Signal(int)  # epoch whose final map is now on screen (tests and the status bar wait on it)

    def __init__(self, state: AppState, parent: QWidget | None = None, *, jobs: JobRunner | None = None,
                 thumbnails: ThumbnailCache | None = None, method: str = "umap", warm_up: bool = True,
                 process: bool | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self._owns_jobs = jobs is None
        self.jobs = jobs or JobRunner(self, max_threads=1)
        self._draw_jobs = JobRunner(self, max_threads=1)  # the drawings of large maps (see _render)
        self.thumbnails = thumbnails or ThumbnailCache(self)
        self.projector = projection.Projector(method)
        self._job_key = ("map", id(self))
        self.method = method
        self.run = None
        self.layout: projection.Layout | None = None
        self.shown_epoch = -1
        self._pending_epoch = -1
        self._layouts: dict[tuple[str, int], projection.Layout] = {}
        self.xy = np.zeros((0, 2), np.float32)
        self.labels = np.zeros(0, np.int64)
        self.split = np.zeros(0, np.int8)
        self.classes: list[str] = []
        self.paths: list[str] = []
        self._visible = np.zeros(0, bool)
        self._hidden: set[int] = set()
        self._draw_order = np.zeros(0, np.int64)
        self._symbol_rows: np.ndarray | None = None  # the rows the scatter holds, in its order
        self._rows_cache: tuple | None = None  # see _render
        self._xy_cache: tuple | None = None
        self.render_mode = "symbols"
        self.hover_id = -1
        self._anim_from = self._anim_to = None
        self._anim_t0 = 0.0
        self._last_render = 0.0
        self._build_ui()
        self._connect()
        # UMAP / t-SNE run in the job runner's long-lived child process (warmed up there now), so numba never
        # holds this process's GIL; process=False keeps them in a worker thread (tests, benchmarks)
        self.use_process = warm_up if process is None else bool(process)
        self.projection_worker: ProjectionWorker | None = None
        if self.use_process:
            self.projection_worker = self.projector.worker = ProjectionWorker(warm=True)
        elif warm_up and method == "umap" and not projection.is_warm():
            self.jobs.submit(("umap-warm-up", id(self)), _warm_up_job)
        if state.run is not None:
            self._on_run_changed(state.run)
            self._on_epochs_available(state.epochs)
            if state.epoch >= 0:
                self._on_epoch_changed(state.epoch)

    # ------------------------------------------------------------------------------------------------- UI
    def _build_ui(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        outer.setSpacing(4)

        bar = QHBoxLayout()
        self.method_combo = QComboBox()
        for key in projection.METHODS:
            self.method_combo.addItem(METHOD_TITLES[key], key)
        self.method_combo.setCurrentIndex(projection.METHODS.index(self.method))
        self.method_combo.setToolTip("How the embeddings are laid out in 2-D. UMAP keeps neighbourhoods, PCA is "
                                     "linear and instant, t-SNE is slow but separates clusters sharply.")
        bar.addWidget(QLabel("Layout:"))
        bar.addWidget(self.method_combo)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Select by class or file name…  (Ctrl+F)")
        self.search.setClearButtonEnabled(True)
        self.search.setToolTip("Type part of a class or file name and press Enter: matching images are selected")
        bar.addWidget(self.search, 1)
        self.lasso_button = QToolButton()
        self.lasso_button.setText("Lasso")
        self.lasso_button.setCheckable(True)
        self.lasso_button.setToolTip("Lasso select: drag around points to select them (L). Without it: Alt+drag "
                                     "draws a lasso, Shift+drag a box; add Ctrl to add to the selection")
        bar.addWidget(self.lasso_button)
        self.fit_button = QToolButton()
        self.fit_button.setText("Fit")
        self.fit_button.setToolTip("Zoom to show every point (Ctrl+0)")
        bar.addWidget(self.fit_button)
        self.export_button = QToolButton()
        self.export_button.setText("Export")
        self.export_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.export_button)
        self.export_png_action = menu.addAction("Export map as PNG…", self._ask_export_png)
        self.export_svg_action = menu.addAction("Export map as SVG…", self._ask_export_svg)
        self.export_button.setMenu(menu)
        self.export_button.setToolTip("Save the map as an image (Ctrl+Shift+E)")
        bar.addWidget(self.export_button)
        outer.addLayout(bar)

        split = QSplitter(Qt.Orientation.Horizontal)
        self.viewbox = _MapViewBox()
        self.plot = pg.PlotWidget(viewBox=self.viewbox, background="w")
        self.plot.hideAxis("left")
        self.plot.hideAxis("bottom")
        self.plot.setMenuEnabled(False)
        self.plot.setToolTip("")
        self.plot.setMinimumSize(320, 240)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setZValue(0)
        self.viewbox.addItem(self.image, ignoreBounds=True)
        self.scatter = pg.ScatterPlotItem(pxMode=True, useCache=True, pen=None, size=7, hoverable=False)
        self.scatter.setZValue(1)
        self.viewbox.addItem(self.scatter)
        self.highlight_lines = pg.PlotCurveItem(connect="pairs", pen=pg.mkPen((20, 20, 20, 200), width=1.5))
        self.highlight_lines.setZValue(2)
        self.viewbox.addItem(self.highlight_lines, ignoreBounds=True)
        self.highlight_item = pg.ScatterPlotItem(pxMode=True, size=15, pen=pg.mkPen("k", width=1.5))
        self.highlight_item.setZValue(3)
        self.viewbox.addItem(self.highlight_item, ignoreBounds=True)
        self.selection_item = pg.ScatterPlotItem(pxMode=True, size=13, brush=None,
                                                 pen=pg.mkPen((0, 0, 0), width=2))
        self.selection_item.setZValue(4)
        self.viewbox.addItem(self.selection_item, ignoreBounds=True)
        # the edits beside the run (Edit menu): excluded images crossed out in grey, relabelled ones ringed in
        # their new class's colour
        self.edit_item = pg.ScatterPlotItem(pxMode=True, size=10)
        self.edit_item.setZValue(2.5)
        self.viewbox.addItem(self.edit_item, ignoreBounds=True)
        self._marks: tuple[np.ndarray, np.ndarray, np.ndarray] = (np.zeros(0, np.int64),) * 3
        self.placeholder = pg.TextItem(PLACEHOLDER_WAITING, color=(110, 110, 110), anchor=(0.5, 0.5))
        self.viewbox.addItem(self.placeholder, ignoreBounds=True)

        self.hover_label = QLabel(self.plot)
        self.hover_label.setFrameShape(QFrame.Shape.StyledPanel)
        self.hover_label.setStyleSheet("QLabel { background: #fffff4; color: #202020; border: 1px solid #888;"
                                       " padding: 4px; }")
        self.hover_label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.hover_label.hide()
        self.hover_text = ""
        split.addWidget(self.plot)

        side = QWidget()
        side_lay = QVBoxLayout(side)
        side_lay.setContentsMargins(0, 0, 0, 0)
        side_lay.addWidget(QLabel("Classes (tick to show; double-click: only this)"))
        self.legend = QListView()
        self.legend_model = LegendModel(self)
        self.legend.setModel(self.legend_model)
        self.legend.setUniformItemSizes(True)
        self.legend.setToolTip("Tick or untick a class to show or hide its points; double-click shows only it")
        self.legend.setMinimumWidth(110)
        self.legend.setMaximumWidth(170)
        side_lay.addWidget(self.legend, 1)
        self.marker_note = QLabel("● train   ▲ held-out")
        self.marker_note.setToolTip("Marker shape: circles are training images, triangles held-out images")
        side_lay.addWidget(self.marker_note)
        split.addWidget(side)
        split.setStretchFactor(0, 4)
        split.setStretchFactor(1, 1)
        split.setSizes([700, 180])
        outer.addWidget(split, 1)

        hist = QHBoxLayout()
        self.play_button = QToolButton()
        self.play_button.setCheckable(True)
        # the style's icons: the pause glyph rendered as an empty box with common Linux fonts
        self._play_icons = (self.style().standardIcon(QStyle.StandardPixmap.SP_MediaPlay),
                            self.style().standardIcon(QStyle.StandardPixmap.SP_MediaPause))
        self.play_button.setIcon(self._play_icons[0])
        self.play_button.setToolTip("Play the run's history epoch by epoch (Alt+P)")
        hist.addWidget(self.play_button)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setEnabled(False)
        self.slider.setToolTip("Go back through the run's epochs (Alt+Left / Alt+Right)")
        self.slider.setPageStep(1)
        hist.addWidget(self.slider, 1)
        self.epoch_label = QLabel("no epoch")
        self.epoch_label.setMinimumWidth(110)
        hist.addWidget(self.epoch_label)
        outer.addLayout(hist)

        status = QHBoxLayout()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        status.addWidget(self.status, 1)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setMaximumWidth(180)
        self.progress.setMinimumWidth(1)  # it takes the room there is: showing it must not widen the window
        self.progress.setTextVisible(False)
        self.progress.hide()
        status.addWidget(self.progress)
        outer.addLayout(status)

        self._render_timer = QTimer(self)
        self._render_timer.setSingleShot(True)
        self._render_timer.setInterval(RENDER_REST_MS)
        self._render_timer.timeout.connect(self._render)
        self._anim_timer = QTimer(self)
        self._anim_timer.setInterval(16)
        self._anim_timer.timeout.connect(self._anim_step)
        self._play_timer = QTimer(self)
        self._play_timer.setInterval(700)
        self._play_timer.timeout.connect(self._play_step)
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(300)
        self._search_timer.timeout.connect(self.apply_search)

        for seq, slot in (("Ctrl+F", self._focus_search), ("Escape", self.clear_selection),
                          ("Ctrl+0", self.fit_view), ("L", self.lasso_button.toggle), ("Alt+Left", lambda: self.step_epoch(-1)),
                          ("Alt+Right", lambda: self.step_epoch(1)), ("Alt+P", self.play_button.toggle),
                          ("Ctrl+Shift+E", self._ask_export_png)):
            sc = QShortcut(QKeySequence(seq), self)
            sc.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            sc.activated.connect(slot)

    def _connect(self) -> None:
        st = self.state
        st.run_changed.connect(self._on_run_changed)
        st.epochs_available.connect(self._on_epochs_available)
        st.epoch_changed.connect(self._on_epoch_changed)
        st.selection_changed.connect(self._on_selection_changed)
        st.highlight_changed.connect(self._on_highlight_changed)
        self.thumbnails.ready.connect(self._on_thumbnail)
        self.thumbnails.failed.connect(self._on_thumbnail_failed)
        self.method_combo.currentIndexChanged.connect(self._on_method_changed)
        self.search.returnPressed.connect(self.apply_search)
        self.search.textEdited.connect(lambda _t: self._search_timer.start())
        self.fit_button.clicked.connect(self.fit_view)
        self.slider.valueChanged.connect(self._on_slider)
        self.play_button.toggled.connect(self._on_play_toggled)
        self.legend_model.toggled.connect(lambda i, shown: self.set_class_visible(i, shown, _from_legend=True))
        self.legend.doubleClicked.connect(self._on_legend_double_clicked)
        self.viewbox.sigRangeChanged.connect(self._on_range_changed)
        # a wheel or drag by the user: a new epoch keeps their view instead of fitting its own
        self.viewbox.sigRangeChangedManually.connect(lambda *_: setattr(self, "_user_moved_view", True))
        self.viewbox.sigBoxSelected.connect(self._on_box_selected)
        self.viewbox.sigLassoSelected.connect(lambda poly, add: self.select_in_polygon(poly, add=add))
        self.lasso_button.toggled.connect(self._on_lasso_toggled)
        scene = self.plot.scene()
        self._hover_proxy = pg.SignalProxy(scene.sigMouseMoved, rateLimit=30, slot=self._on_mouse_moved)
        # the card followed mouse moves only: a pointer leaving the plot in one quick move (to another panel or
        # window) left it on screen for minutes
        self.plot.viewport().installEventFilter(self)
        # Esc in the search box or over the plot clears the selection even when the window is not the active one
        # (the Esc shortcut needs an active window; under some window managers it is not, and nothing happened)
        self.search.installEventFilter(self)
        scene.sigMouseClicked.connect(self._on_mouse_clicked)

    # ------------------------------------------------------------------------------------------- run/epochs
    @Slot(object)
    def _on_run_changed(self, run) -> None:
        self.jobs.cancel(self._job_key)
        self.run = run
        self.projector.reset()
        self._layouts.clear()
        self.layout = None
        self.shown_epoch = self._pending_epoch = -1
        self._hidden.clear()
        self._anim_timer.stop()
        self.play_button.setChecked(False)
        self.hover_label.hide()
        self.hover_id = -1
        if run is None:
            self.classes, self.paths = [], []
            self.labels = np.zeros(0, np.int64)
            self.split = np.zeros(0, np.int8)
            self.thumbnails.set_samples(None)
        else:
            s = run.samples
            self.classes = list(run.classes)
            self.paths = list(s.paths)
            self.labels = np.asarray(s.labels, dtype=np.int64)
            self.split = np.asarray(s.split, dtype=np.int8)
            self.thumbnails.set_samples(s)
            self.projector.metric = run.metric
        self.xy = np.zeros((0, 2), np.float32)
        # one brush per palette colour (class i uses brush i % len): 2,000 classes built 2,000 brushes in ~0.1 s
        self._brushes = [pg.mkBrush(*rgb, 230) for rgb in PALETTE]
        self._rgba = palette_rgba(max(1, len(self.classes)))
        self._build_legend()
        self._update_visible()
        self._clear_symbols()
        self.image.clear()
        self.selection_item.clear()
        self.highlight_item.clear()
        self.highlight_lines.clear()
        self.placeholder.setText(PLACEHOLDER_WAITING)
        self.placeholder.setVisible(True)
        self.status.setText("" if run is None else "Waiting for the first committed epoch…")

    def _build_legend(self) -> None:
        counts = np.bincount(self.labels, minlength=len(self.classes)) if len(self.labels) else []
        self.legend_model.set_classes(self.classes, counts)

    @Slot(list)
    def _on_epochs_available(self, epochs: list) -> None:
        self._epochs = list(epochs)
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, len(epochs) - 1))
        if self.state.epoch in self._epochs:
            self.slider.setValue(self._epochs.index(self.state.epoch))
        self.slider.setEnabled(len(epochs) > 1)
        self.slider.blockSignals(False)
        self._update_epoch_label()

    def _update_epoch_label(self) -> None:
        epochs = getattr(self, "_epochs", [])
        if not epochs or self.state.epoch < 0:
            self.epoch_label.setText("no epoch")
        else:
            self.epoch_label.setText(f"epoch {self.state.epoch} / {epochs[-1]}")

    @Slot(int)
    def _on_epoch_changed(self, epoch: int) -> None:
        epochs = getattr(self, "_epochs", [])
        if epoch in epochs:
            self.slider.blockSignals(True)
            self.slider.setValue(epochs.index(epoch))
            self.slider.blockSignals(False)
        self._update_epoch_label()
        self.request_map(epoch)

    def request_map(self, epoch: int, method: str | None = None) -> None:
        """Show ``epoch``'s map: from the cache, or computed in a background job (the old job is cancelled)."""
        if self.run is None or epoch < 0:
            return
        method = method or self.method
        cached = self._layouts.get((method, epoch))
        if cached is not None:
            self.jobs.cancel(self._job_key)
            self.progress.hide()
            self._show_layout(epoch, cached, final=True)
            return
        self._pending_epoch = epoch
        pca_first = self.layout is None and method != "pca"
        self.jobs.submit(self._job_key, map_job, self.run, epoch, method, self.projector, self.labels, pca_first,
                         on_result=self._on_layout, on_partial=self._on_layout_preview,
                         on_progress=self._on_map_progress, on_failed=self._on_map_failed)
        self.progress.setValue(0)
        self.progress.show()

    def _on_method_changed(self, _index: int) -> None:
        self.method = self.method_combo.currentData()
        self.projector.method = self.method
        self.request_map(self.state.epoch)

    def step_epoch(self, delta: int) -> bool:
        """Show the epoch ``delta`` steps away in the run's history; False at either end."""
        epochs = getattr(self, "_epochs", [])
        if not epochs:
            return False
        i = epochs.index(self.state.epoch) if self.state.epoch in epochs else len(epochs) - 1
        j = i + delta
        if not 0 <= j < len(epochs):
            return False
        self.state.set_epoch(epochs[j])
        return True

    def _on_slider(self, value: int) -> None:
        epochs = getattr(self, "_epochs", [])
        if 0 <= value < len(epochs):
            self.state.set_epoch(epochs[value])

    def _on_play_toggled(self, on: bool) -> None:
        self.play_button.setIcon(self._play_icons[1] if on else self._play_icons[0])
        if on:
            epochs = getattr(self, "_epochs", [])
            if epochs and self.state.epoch == epochs[-1]:
                self.state.set_epoch(epochs[0])  # start from the beginning
            self._play_timer.start()
        else:
            self._play_timer.stop()

    def _play_step(self) -> None:
        if self.jobs.is_running(self._job_key) or self._anim_timer.isActive():
            return  # wait for the current map before moving on
        if not self.step_epoch(1):
            self.play_button.setChecked(False)

    # ------------------------------------------------------------------------------------------------ jobs
    def _on_layout_preview(self, result) -> None:
        if result is None:
            return
        epoch, layout, ordered = result
        self._show_layout(epoch, layout, final=False, ordered=ordered)

    def _on_layout(self, result) -> None:
        if result is None:
            return
        epoch, layout, ordered = result
        self.progress.hide()
        self._layouts[(layout.method, epoch)] = layout
        self._show_layout(epoch, layout, final=True, ordered=ordered)

    def _on_map_progress(self, fraction: float, text: str) -> None:
        self.progress.setValue(int(1000 * max(0.0, min(1.0, fraction))))
        self.progress.setToolTip(text)
        if text:
            self.status.setText(f"Epoch {self._pending_epoch}: {text}…")

    def _on_map_failed(self, message: str) -> None:
        self.progress.hide()
        first = message.splitlines()[0] if message else "unknown error"
        self.status.setText(f"Could not compute the map of epoch {self._pending_epoch}: {first}")
        self.status.setToolTip(message)
        if self.layout is None:  # nothing drawn yet: the empty plot says why, not that it waits for an epoch
            self.placeholder.setText(PLACEHOLDER_FAILED.format(epoch=self._pending_epoch))

    # --------------------------------------------------------------------------------------------- drawing
    def _show_layout(self, epoch: int, layout: projection.Layout, *, final: bool,
                     ordered: np.ndarray | None = None) -> None:
        """Show ``layout``; ``ordered``, if given, is its positions in :func:`draw_order` (gathered by the job)."""
        self.hide_hover()  # the points move: a card left from before would point at the wrong place
        xy = np.asarray(layout.xy, np.float32)
        # a new run, or another kind of layout (the PCA preview giving way to UMAP): its scale is new, so refit
        first = self.layout is None or len(self.xy) != len(xy) or self.layout.method != layout.method
        self.layout = layout
        self.shown_epoch = epoch
        if len(self._draw_order) != len(xy):
            self._draw_order = draw_order(len(xy))
        self.placeholder.setVisible(False)
        title = METHOD_TITLES.get(layout.method, layout.method)
        parts = [f"Epoch {epoch} · {title} of {len(xy):,} images"]
        if layout.note:
            parts.append(layout.note)
        if final:
            parts.append(f"{layout.seconds:.1f} s")
        self.status.setText(" · ".join(parts))
        self.status.setToolTip("")
        if not first and len(xy) <= ANIMATE_MAX and len(self.xy) == len(xy):
            self._anim_from = self.xy.copy()
            self._anim_to = xy
            self._anim_t0 = time.perf_counter()
            self._anim_timer.start()
        else:
            self._anim_timer.stop()
            self.xy = xy
            if ordered is not None and len(ordered) == len(xy) and self._visible.all():
                self._xy_cache = (self.xy, self._draw_order, ordered)  # what _render would gather
            if first:
                self.fit_view()  # renders once, at the fitted range
            elif not self._refit_if_untouched():
                self._render()
        self._on_selection_changed(self.state.selection)
        self._on_highlight_changed(self.state.highlight)
        self._draw_marks()
        if final:
            self.map_ready.emit(epoch)

    def _anim_step(self) -> None:
        t = (time.perf_counter() - self._anim_t0) * 1000.0 / ANIMATE_MS
        if t >= 1.0 or self._anim_from is None:
            self._anim_timer.stop()
            self.xy = self._anim_to if self._anim_to is not None else self.xy
            self._anim_from = self._anim_to = None
            if self._refit_if_untouched():  # the new layout has another extent
                self._on_selection_changed(self.state.selection)
                self._on_highlight_changed(self.state.highlight)
                self._draw_marks()
                return
        else:
            e = t * t * (3 - 2 * t)  # smoothstep
            self.xy = (self._anim_from + (self._anim_to - self._anim_from) * e).astype(np.float32)
        self._render()
        self._on_selection_changed(self.state.selection)
        self._on_highlight_changed(self.state.highlight)
        self._draw_marks()

    def _update_visible(self) -> None:
        if len(self.labels) == 0:
            self._visible = np.zeros(0, bool)
            return
        hidden = np.zeros(max(1, len(self.classes)), bool)
        for h in self._hidden:
            if h < len(hidden):
                hidden[h] = True
        self._visible = ~hidden[self.labels]

    def _view_pixels(self) -> tuple[int, int]:
        r = self.viewbox.sceneBoundingRect()
        dpr = self.plot.devicePixelRatioF() if hasattr(self.plot, "devicePixelRatioF") else 1.0
        return max(1, int(r.width() * dpr)), max(1, int(r.height() * dpr))

    def _on_range_changed(self, *_args) -> None:
        if len(self.xy) <= SYMBOL_MAX:
            return  # all points are symbols already; pyqtgraph just redraws them
        # Re-render at rest: while the view moves, the last raster (drawn with a margin around the view) just
        # follows it as a transformed image, so a frame costs no splat; the new raster comes once motion stops.
        self._render_timer.start()

    def _render(self) -> None:
        """Draw the visible points as symbols (few in view) or as one raster image (many in view). A map of
        RASTER_ASYNC_MIN points or more is drawn in the map's drawing thread (the gathers and the splat of 1e6
        points held the GUI thread ~0.2 s); the last drawing stays on screen until the new one is ready."""
        self._last_render = time.perf_counter()
        n = len(self.xy)
        if n == 0 or len(self._visible) != n:
            self._draw_jobs.cancel("frame")
            self._clear_symbols()
            self.image.clear()
            return
        if n > SYMBOL_MAX:
            key = (self._visible, self._draw_order, self._rgba, self.labels)
            rc, xc = self._rows_cache, self._xy_cache
            source = rc[1:] if rc is not None and all(a is b for a, b in zip(rc[0], key)) else None
            rows = source[0] if source is not None else self._draw_order if self._visible.all() else None
            p = xc[2] if xc is not None and rows is not None and xc[0] is self.xy and xc[1] is rows else None
            args = (self.xy, self._draw_order, self._visible, self.labels, self._rgba, self.viewbox.viewRange(),
                    self._view_pixels())
            opts = dict(margin=RASTER_MARGIN, symbol_max=SYMBOL_MAX, source=source, p=p)
            done = functools.partial(self._apply_frame, key, self.xy)
            if n >= RASTER_ASYNC_MIN:
                self._draw_jobs.submit("frame", frame_job, *args, on_result=done, **opts)
            else:
                self._draw_jobs.cancel("frame")
                done(draw_frame(*args, **opts))
            return
        self._draw_jobs.cancel("frame")
        order = self._draw_order
        self._draw_symbols(order[self._visible[order]])

    def _apply_frame(self, key: tuple, xy: np.ndarray, frame: Frame) -> None:
        """Show a drawing of a large map; keep its gathers for the next one while the layout and visibility last."""
        if xy is not self.xy:  # drawn for positions since replaced (a new layout is being drawn)
            return
        if all(a is b for a, b in zip(key, (self._visible, self._draw_order, self._rgba, self.labels))):
            self._rows_cache = (key, frame.rows, frame.colours)
            self._xy_cache = (xy, frame.rows, frame.p)
        if frame.image is None:
            self._draw_symbols(frame.in_rows)
            return
        self.render_mode = "raster"
        self._clear_symbols()
        self.image.setImage(frame.image, autoLevels=False)
        self.image.setRect(QRectF(*frame.rect))
        self.image.show()

    def _draw_symbols(self, in_rows: np.ndarray) -> None:
        self.render_mode = "symbols"
        self.image.hide()
        p = self.xy[in_rows]
        if self._symbol_rows is not None and np.array_equal(self._symbol_rows, in_rows):
            # the same points moved (an animation frame, the next epoch): move them in place. setData would
            # rebuild every spot's brush and symbol, 60-180 ms for 10,000 points, many times per animation
            d = self.scatter.data
            d["x"] = p[:, 0]
            d["y"] = p[:, 1]
            self.scatter.prepareGeometryChange()
            self.scatter.bounds = [None, None]
            self.scatter.informViewBoundsChanged()
            self.scatter.invalidate()
            return
        brushes = np.array(self._brushes, dtype=object)[self.labels[in_rows] % len(self._brushes)]
        symbols = np.array(SPLIT_SYMBOLS, dtype=object)[np.clip(self.split[in_rows], 0, 1)]
        self.scatter.setData(x=p[:, 0], y=p[:, 1], brush=brushes, symbol=symbols, pen=None, data=in_rows)
        self._symbol_rows = in_rows.copy()

    def _clear_symbols(self) -> None:
        self.scatter.clear()
        self._symbol_rows = None

    def fit_view(self) -> None:
        """Zoom to show every visible point."""
        if len(self.xy) == 0:
            return
        p = self.xy if self._visible.all() or not self._visible.any() else self.xy[self._visible]
        # per column: a (N, 2) reduction along axis 0 and the masked copy took ~0.1 s of the GUI thread at 1e6
        lo = [float(p[:, 0].min()), float(p[:, 1].min())]
        hi = [float(p[:, 0].max()), float(p[:, 1].max())]
        pad = 0.04 * max(hi[0] - lo[0], hi[1] - lo[1], 1e-6)
        self.viewbox.setRange(xRange=(lo[0] - pad, hi[0] + pad), yRange=(lo[1] - pad, hi[1] + pad), padding=0)
        self._user_moved_view = False
        self._render()

    def _refit_if_untouched(self) -> bool:
        """Fit a new epoch's layout when the view shows it badly, unless the user zoomed or panned since the
        last fit (their view stays)."""
        if not getattr(self, "_user_moved_view", False) and view_needs_fit(self.xy, self.viewbox.viewRange()):
            self.fit_view()
            return True
        return False

    # -------------------------------------------------------------------------------------- class filter
    def _on_legend_double_clicked(self, index) -> None:
        keep = int(index.row())
        self._hidden = {i for i in range(len(self.classes)) if i != keep}
        self._sync_legend()
        self._update_visible()
        self._render()

    def _sync_legend(self) -> None:
        self.legend_model.set_hidden(self._hidden)

    def set_class_visible(self, class_index: int, visible: bool, *, _from_legend: bool = False) -> None:
        """Show or hide the points of one class (hidden points cannot be hovered or selected)."""
        if visible:
            self._hidden.discard(int(class_index))
        else:
            self._hidden.add(int(class_index))
        if not _from_legend:
            self._sync_legend()
        self._update_visible()
        self._render()

    def visible_ids(self) -> np.ndarray:
        """Sample ids whose class is shown."""
        return np.flatnonzero(self._visible)

    # ----------------------------------------------------------------------------------- hover & select
    def nearest_point(self, x: float, y: float, radius_px: float = HOVER_RADIUS_PX) -> int:
        """Sample id of the visible point nearest to view position (x, y) within ``radius_px`` screen pixels, or -1."""
        if len(self.xy) == 0 or not self._visible.any():
            return -1
        px, py = self.viewbox.viewPixelSize()
        px, py = max(px, 1e-30), max(py, 1e-30)
        dx = (self.xy[:, 0] - x) / px
        dy = (self.xy[:, 1] - y) / py
        d2 = dx * dx + dy * dy
        d2 = np.where(self._visible, d2, np.inf)
        i = int(np.argmin(d2))
        return i if d2[i] <= radius_px * radius_px else -1

    def point_view_pos(self, sample_id: int) -> QPointF:
        """Where sample ``sample_id`` is drawn, in view (data) coordinates."""
        x, y = self.xy[int(sample_id)]
        return QPointF(float(x), float(y))

    def _on_mouse_moved(self, args) -> None:
        pos = args[0]
        if not self.viewbox.sceneBoundingRect().contains(pos):
            self.hide_hover()
            return
        p = self.viewbox.mapSceneToView(pos)
        self.hover_at(p.x(), p.y(), widget_pos=self.plot.mapFromScene(pos))

    def hover_at(self, x: float, y: float, widget_pos=None) -> int:
        """Show the thumbnail card of the point under view position (x, y); returns its id or -1."""
        sid = self.nearest_point(x, y)
        if sid < 0:
            self.hide_hover()
            return -1
        if widget_pos is None:
            widget_pos = self.plot.mapFromScene(self.viewbox.mapViewToScene(QPointF(x, y)))
        self._hover_pos = widget_pos
        if sid != self.hover_id:
            self.hover_id = sid
            self._fill_hover(self.thumbnails.request(sid))
        self._place_hover()
        return sid

    def hide_hover(self) -> None:
        """Hide the hover card."""
        self.hover_id = -1
        self.hover_label.hide()

    def _hover_caption(self, sid: int) -> str:
        cls = self.classes[self.labels[sid]] if 0 <= self.labels[sid] < len(self.classes) else "?"
        split = SPLIT_NAMES[int(self.split[sid])] if 0 <= int(self.split[sid]) < 2 else "?"
        return f"{self.paths[sid]}\nclass: {cls} · {split}"

    def _fill_hover(self, pixmap: QPixmap | None) -> None:
        sid = self.hover_id
        if sid < 0:
            return
        caption = self._hover_caption(sid)
        err = self.thumbnails.error(sid)
        self.hover_text = caption + (f"\n⚠ {err}" if err else "" if pixmap is not None else "\n(loading…)")
        self.hover_pixmap = pixmap
        if pixmap is not None:
            self.hover_label.setPixmap(pixmap)
            self._hover_caption_label().setText(self.hover_text)
        else:
            self.hover_label.setText(self.hover_text)
            self._hover_caption_label().setText("")
        self.hover_label.adjustSize()
        self.hover_label.show()
        self.hover_label.raise_()

    def _hover_caption_label(self) -> QLabel:
        lab = getattr(self, "_caption_label", None)
        if lab is None:
            lab = QLabel(self.plot)
            lab.setStyleSheet("QLabel { background: #fffff4; color: #202020; border: 1px solid #888;"
                              " padding: 2px 4px; }")
            lab.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
            self._caption_label = lab
        return lab

    def _place_hover(self) -> None:
        if self.hover_id < 0:
            return
        pos = getattr(self, "_hover_pos", None)
        if pos is None:
            return
        cap = self._hover_caption_label()
        x, y = int(pos.x()) + 16, int(pos.y()) + 16
        w = self.hover_label.width()
        cap.setVisible(bool(cap.text()))
        cap.adjustSize()
        total_h = self.hover_label.height() + (cap.height() if cap.isVisible() else 0)
        if x + max(w, cap.width()) > self.plot.width():
            x = int(pos.x()) - 16 - max(w, cap.width())
        if y + total_h > self.plot.height():
            y = max(0, int(pos.y()) - 16 - total_h)
        self.hover_label.move(max(0, x), y)
        cap.move(max(0, x), y + self.hover_label.height())
        cap.raise_()

    def _on_thumbnail(self, sid: int, pixmap: QPixmap) -> None:
        if sid == self.hover_id:
            self._fill_hover(pixmap)
            self._place_hover()

    def _on_thumbnail_failed(self, sid: int, message: str) -> None:
        if sid == self.hover_id:
            self._fill_hover(None)
            self._place_hover()

    def shutdown(self, timeout: float = 2.0) -> bool:
        """Cancel the map's jobs and stop its projection process (window close, aboutToQuit)."""
        if self.projection_worker is not None:  # first: a job's thread may be waiting on the child
            self.projection_worker.close(timeout=min(timeout, 2.0))
        drawn = self._draw_jobs.shutdown(min(timeout, 2.0))
        return self.jobs.shutdown(timeout) and drawn

    def closeEvent(self, ev) -> None:  # noqa: N802 - Qt naming
        if self._owns_jobs:  # a map with its own runner stops its jobs and projection process itself
            self.shutdown(2.0)
        else:
            self._draw_jobs.shutdown(2.0)
        super().closeEvent(ev)

    def hideEvent(self, ev) -> None:  # noqa: N802 - Qt naming
        self.hide_hover()
        super().hideEvent(ev)

    _HOVER_ENDS = (QEvent.Type.Leave, QEvent.Type.WindowDeactivate, QEvent.Type.Hide, QEvent.Type.Wheel,
                   QEvent.Type.MouseButtonPress)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt naming
        """The plot's viewport: the hover card goes when the pointer leaves it, the window loses focus, or the
        user scrolls or clicks (the point under the card moves away)."""
        if event.type() == QEvent.Type.KeyPress and event.key() == Qt.Key.Key_Escape:
            self.clear_selection()
            return True
        if event.type() in self._HOVER_ENDS and self.hover_id >= 0:
            self.hide_hover()
        return False

    def _on_mouse_clicked(self, ev) -> None:
        if ev.button() != Qt.MouseButton.LeftButton or ev.double():
            return
        if not self.viewbox.sceneBoundingRect().contains(ev.scenePos()):
            return
        p = self.viewbox.mapSceneToView(ev.scenePos())
        additive = bool(ev.modifiers() & Qt.KeyboardModifier.ControlModifier)
        self.select_at(p.x(), p.y(), add=additive)

    def select_at(self, x: float, y: float, *, add: bool = False) -> int:
        """Click at view position (x, y): select the point there (Ctrl: toggle it); empty space clears."""
        sid = self.nearest_point(x, y)
        if sid < 0:
            if not add:
                self.state.set_selection([])
            return -1
        if add:
            sel = set(self.state.selection.tolist())
            sel.symmetric_difference_update({sid})
            self.state.set_selection(sorted(sel))
        else:
            self.state.set_selection([sid])
        return sid

    def _on_box_selected(self, rect: QRectF, additive: bool) -> None:
        self.select_in_rect(rect.left(), rect.right(), rect.top(), rect.bottom(), add=additive)

    def select_in_rect(self, x0: float, x1: float, y0: float, y1: float, *, add: bool = False) -> np.ndarray:
        """Select the visible points inside the box (view coordinates); ``add`` keeps the old selection."""
        if len(self.xy) == 0:
            return np.zeros(0, np.int64)
        xlo, xhi = sorted((x0, x1))
        ylo, yhi = sorted((y0, y1))
        p = self.xy
        inside = (p[:, 0] >= xlo) & (p[:, 0] <= xhi) & (p[:, 1] >= ylo) & (p[:, 1] <= yhi) & self._visible
        ids = np.flatnonzero(inside)
        if add:
            ids = np.union1d(ids, self.state.selection)
        self.state.set_selection(ids)
        return ids

    def _on_lasso_toggled(self, on: bool) -> None:
        self.viewbox.lasso_mode = on
        self.plot.setCursor(Qt.CursorShape.CrossCursor if on else Qt.CursorShape.ArrowCursor)

    def select_in_polygon(self, poly: np.ndarray, *, add: bool = False) -> np.ndarray:
        """Select the visible points inside the lasso polygon (view coordinates); ``add`` keeps the old selection."""
        if len(self.xy) == 0:
            return np.zeros(0, np.int64)
        ids = np.flatnonzero(points_in_polygon(self.xy, poly) & self._visible)
        if add:
            ids = np.union1d(ids, self.state.selection)
        self.state.set_selection(ids)
        self.status.setText(f"Lasso: {len(ids):,} images selected")
        return ids

    def _focus_search(self) -> None:
        self.search.setFocus()
        self.search.selectAll()

    def clear_selection(self) -> None:
        """Esc: no selection, no highlight, an empty search."""
        self.search.blockSignals(True)
        self.search.clear()
        self.search.blockSignals(False)
        self.state.set_selection([])
        self.state.set_highlight([])

    def apply_search(self) -> np.ndarray:
        """Select what the search text names (case-insensitive): a class of that name; else the classes whose
        names contain it; else the images whose file path contains it ("file:" searches file paths only).
        Typing "7" selected 626 images, every file name with a 7 in it, as well as class 7."""
        self._search_timer.stop()
        raw = self.search.text().strip()
        text = raw.lower()
        if not text or len(self.labels) == 0:
            return np.zeros(0, np.int64)
        files_only = text.startswith("file:")
        if files_only:
            text = text[len("file:"):].strip()
        names = [c.lower() for c in self.classes]
        exact = np.array([n == text for n in names] or [False], bool)
        contains = np.array([text in n for n in names] or [False], bool)
        cls_hit = np.zeros(max(1, len(names)), bool) if files_only else (exact if exact.any() else contains)
        if cls_hit.any():
            ids = np.flatnonzero(cls_hit[self.labels])
            which = ", ".join(c for c, h in zip(self.classes, cls_hit) if h)
            what = f"class {which}" if cls_hit.sum() == 1 else f"{int(cls_hit.sum())} classes ({which})"
            self.status.setText(f"“{raw}”: {what}, {len(ids):,} images selected (file:{text} searches file names)")
        else:
            by_file = np.fromiter((text in p.lower() for p in self.paths), bool, count=len(self.paths))
            ids = np.flatnonzero(by_file)
            self.status.setText(f"“{raw}”: no class of that name; {len(ids):,} images whose file name contains it")
        self.state.set_selection(ids)
        return ids

    @Slot(object)
    def _on_selection_changed(self, ids) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        ids = ids[(ids >= 0) & (ids < len(self.xy))]
        if len(ids) == 0:
            self.selection_item.clear()
            return
        p = self.xy[ids]
        # the points themselves, larger and outlined, in their class colours: black rings hid the colours
        brushes = [self._brushes[int(c) % len(self._brushes)] for c in self.labels[ids]]
        self.selection_item.setData(x=p[:, 0], y=p[:, 1], brush=brushes, pen=pg.mkPen((20, 20, 20), width=1.2),
                                    size=11 if len(ids) < 2000 else 8)

    def set_marks(self, excluded, relabelled, new_labels) -> None:
        """Show the edits: ``excluded`` sample ids crossed out, ``relabelled`` ids ringed in ``new_labels``'
        class colours."""
        self._marks = (np.asarray(excluded, np.int64), np.asarray(relabelled, np.int64),
                       np.asarray(new_labels, np.int64))
        self._draw_marks()

    def _draw_marks(self) -> None:
        excluded, relabelled, new = self._marks
        n = len(self.xy)
        keep_x = excluded[(excluded >= 0) & (excluded < n)]
        ok = (relabelled >= 0) & (relabelled < n)
        keep_r, new = relabelled[ok], new[ok]
        if len(keep_x) + len(keep_r) == 0:
            self.edit_item.clear()
            return
        spots = [{"pos": tuple(self.xy[i]), "symbol": "x", "size": 10, "brush": pg.mkBrush(110, 110, 110, 220),
                  "pen": pg.mkPen(60, 60, 60)} for i in keep_x]
        spots += [{"pos": tuple(self.xy[i]), "symbol": "o", "size": 13, "brush": None,
                   "pen": pg.mkPen(*class_colour(int(c)), width=2.5)} for i, c in zip(keep_r, new)]
        self.edit_item.setData(spots)

    @Slot(object)
    def _on_highlight_changed(self, ids) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        ids = ids[(ids >= 0) & (ids < len(self.xy))]
        if len(ids) == 0:
            self.highlight_item.clear()
            self.highlight_lines.clear()
            return
        p = self.xy[ids]
        brushes = [self._brushes[int(self.labels[i]) % len(self._brushes)] for i in ids]
        symbols = [SPLIT_SYMBOLS[int(np.clip(self.split[i], 0, 1))] for i in ids]
        sizes = np.full(len(ids), 13.0)
        sizes[0] = 17.0  # the anchor / query point
        self.highlight_item.setData(x=p[:, 0], y=p[:, 1], brush=brushes, symbol=symbols, size=sizes,
                                    pen=pg.mkPen("k", width=1.5))
        if len(ids) > 1:
            seg = np.empty((2 * (len(ids) - 1), 2), np.float32)
            seg[0::2] = p[0]
            seg[1::2] = p[1:]
            self.highlight_lines.setData(x=seg[:, 0], y=seg[:, 1])
        else:
            self.highlight_lines.clear()

    # ------------------------------------------------------------------------------------------- export
    def export_png(self, path: str | Path, width: int | None = None) -> Path:
        """Save the map as a PNG image (the plot ``width`` pixels wide; default: as on screen), with a title line
        (run, epoch, layout) and the class legend beside it: the bare plot was 342 x 664 px with neither."""
        from pyqtgraph.exporters import ImageExporter
        from PySide6.QtGui import QImage, QPainter

        self.hide_hover()
        exp = ImageExporter(self.plot.plotItem)
        if width:
            exp.parameters()["width"] = int(width)
        plot_image = exp.export(toBytes=True)
        title_h, legend_w = self._decoration_size(plot_image.height())
        canvas = QImage(plot_image.width() + legend_w, plot_image.height() + title_h, QImage.Format.Format_RGB32)
        canvas.fill(QColor("white"))
        painter = QPainter(canvas)
        try:
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            painter.drawImage(0, title_h, plot_image)
            self._paint_decorations(painter, plot_image.width(), plot_image.height(), title_h, legend_w)
        finally:
            painter.end()
        if not canvas.save(str(path), "PNG"):
            raise OSError(f"{path}: the PNG could not be written")
        return Path(path)

    def export_title(self) -> str:
        """The line an exported map carries: run, epoch and layout."""
        run = Path(str(self.run.run_dir)).name if self.run is not None else "no run"
        method = METHOD_TITLES.get(self.layout.method, self.layout.method) if self.layout is not None else "map"
        return f"{run} · epoch {max(self.shown_epoch, 0)} · {method} of {len(self.xy):,} images"

    def _legend_rows(self, height: int) -> list[tuple[str, tuple[int, int, int]]]:
        rows = [(f"{name}", class_colour(i)) for i, name in enumerate(self.classes) if i not in self._hidden]
        fit = max(1, (height - 8) // 18)
        if len(rows) > fit:
            rows = rows[:fit - 1] + [(f"… {len(rows) - fit + 1} more classes", (255, 255, 255))]
        return rows

    def _decoration_size(self, plot_height: int) -> tuple[int, int]:
        longest = max((len(name) for name, _ in self._legend_rows(plot_height)), default=0)
        return 30, (min(260, 40 + 7 * longest) if self.classes else 0)

    def _paint_decorations(self, painter, plot_w: int, plot_h: int, title_h: int, legend_w: int) -> None:
        from PySide6.QtGui import QFont

        font = QFont(painter.font())
        font.setPointSize(11)
        font.setBold(True)
        painter.setFont(font)
        painter.setPen(QColor(30, 30, 30))
        painter.drawText(QRectF(8, 0, plot_w + legend_w - 16, title_h), int(Qt.AlignmentFlag.AlignVCenter),
                         self.export_title())
        font.setBold(False)
        font.setPointSize(9)
        painter.setFont(font)
        y = title_h + 6
        for name, rgb in self._legend_rows(plot_h):
            painter.fillRect(QRectF(plot_w + 8, y + 3, 11, 11), QColor(*rgb))
            painter.drawText(QRectF(plot_w + 24, y, legend_w - 28, 18), int(Qt.AlignmentFlag.AlignVCenter), name)
            y += 18

    def export_svg(self, path: str | Path) -> Path:
        """Save the map as an SVG (vector symbols when few points are in view, else the embedded raster).

        pyqtgraph's SVGExporter cannot parse the path syntax Qt >= 6.8 writes (a bare ``Z``), so the plot's scene
        is painted straight into Qt's own QSvgGenerator.
        """
        from PySide6.QtCore import QSize
        from PySide6.QtGui import QPainter
        from PySide6.QtSvg import QSvgGenerator

        self.hide_hover()
        rect = self.plot.plotItem.sceneBoundingRect()
        title_h, legend_w = self._decoration_size(int(rect.height()))
        gen = QSvgGenerator()
        gen.setFileName(str(path))
        gen.setSize(QSize(int(rect.width()) + legend_w, int(rect.height()) + title_h))
        gen.setViewBox(QRectF(0, 0, rect.width() + legend_w, rect.height() + title_h))
        gen.setTitle(self.export_title())
        gen.setDescription(self.status.text())
        painter = QPainter()
        if not painter.begin(gen):
            raise OSError(f"{path}: cannot open for writing")
        try:
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            self.plot.scene().render(painter, QRectF(0, title_h, rect.width(), rect.height()), rect)
            self._paint_decorations(painter, int(rect.width()), int(rect.height()), title_h, legend_w)
        finally:
            painter.end()
        if not Path(path).exists() or Path(path).stat().st_size == 0:
            raise OSError(f"{path}: the SVG could not be written")
        return Path(path)

    def _ask_export(self, suffix: str) -> None:
        name = f"map_epoch{max(self.shown_epoch, 0):04d}.{suffix}"
        if self.run is not None:  # next to the run, not in whatever folder the program was started from
            name = str(Path(self.run.run_dir).parent / f"{Path(self.run.run_dir).name}_{name}")
        path, _ = QFileDialog.getSaveFileName(self, f"Export map as {suffix.upper()}", name,
                                              f"{suffix.upper()} image (*.{suffix})")
        if not path:
            return
        try:
            from trainer.store import refuse_run_file

            refuse_run_file(Path(path))
            (self.export_png if suffix == "png" else self.export_svg)(path)
            self.status.setText(f"Saved {path}")
        except Exception as exc:  # disk full, no permission: say so
            self.status.setText(f"Could not save {path}: {exc}")

    def _ask_export_png(self) -> None:
        self._ask_export("png")

    def _ask_export_svg(self) -> None:
        self._ask_export("svg")

    def resizeEvent(self, ev) -> None:  # noqa: N802 - Qt naming
        super().resizeEvent(ev)
        if self.render_mode == "raster":
            self._render_timer.start()
