"""The live embedding map (placeholder; being built out)."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from explorer.state import AppState


class MapView(QWidget):
    """2-D map of an epoch's embeddings, coloured by class; selection is shared through the AppState."""

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Embedding map: waiting for the first epoch"))
