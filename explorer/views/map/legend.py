"""The map's class legend as a list model: one row per class, ticked when shown.

A model, not a QListWidget: a run of 2,000 classes built 2,000 items (with their icons and tooltips) on the GUI
thread when it opened; the model answers only for the rows on screen.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QAbstractListModel, QModelIndex, Qt, Signal

from explorer.widgets.palette import class_icon


class LegendModel(QAbstractListModel):
    """Class names with their image counts and colour swatches; the check state says whether a class is shown."""

    toggled = Signal(int, bool)  # class index, shown (a tick the user changed)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.names: list[str] = []
        self.counts = np.zeros(0, np.int64)
        self.hidden: set[int] = set()

    def set_classes(self, names: list[str], counts) -> None:
        """A new run's classes, every one shown."""
        self.beginResetModel()
        self.names = [str(n) for n in names]
        self.counts = np.asarray(counts, np.int64) if len(counts) else np.zeros(len(self.names), np.int64)
        self.hidden = set()
        self.endResetModel()

    def set_hidden(self, hidden) -> None:
        """Tick every class but ``hidden`` (no ``toggled`` signal: the caller already knows)."""
        self.hidden = {int(i) for i in hidden}
        if self.names:
            self.dataChanged.emit(self.index(0), self.index(len(self.names) - 1), [Qt.ItemDataRole.CheckStateRole])

    def is_checked(self, i: int) -> bool:
        return int(i) not in self.hidden

    # ---- the model ------------------------------------------------------------------------------------------------
    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt naming
        return 0 if parent.isValid() else len(self.names)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or not 0 <= index.row() < len(self.names):
            return None
        i = index.row()
        name, count = self.names[i], int(self.counts[i]) if i < len(self.counts) else 0
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{name}  ({count})"
        if role == Qt.ItemDataRole.DecorationRole:
            return class_icon(i)
        if role == Qt.ItemDataRole.CheckStateRole:
            return Qt.CheckState.Unchecked if i in self.hidden else Qt.CheckState.Checked
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{name}: {count} images"
        if role == Qt.ItemDataRole.UserRole:
            return i
        return None

    def flags(self, index):
        base = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        return base | Qt.ItemFlag.ItemIsUserCheckable if index.isValid() else Qt.ItemFlag.NoItemFlags

    def setData(self, index, value, role=Qt.ItemDataRole.EditRole) -> bool:  # noqa: N802 - Qt naming
        if role != Qt.ItemDataRole.CheckStateRole or not index.isValid():
            return False
        state = value if isinstance(value, Qt.CheckState) else Qt.CheckState(int(value))
        i, shown = index.row(), state == Qt.CheckState.Checked
        if shown == (i not in self.hidden):
            return True
        (self.hidden.discard if shown else self.hidden.add)(i)
        self.dataChanged.emit(index, index, [Qt.ItemDataRole.CheckStateRole])
        self.toggled.emit(i, shown)
        return True
