"""Labels that never widen the window: a long file path in a label used to push the window past the screen
(1280 -> 1780 px after a query by image), and the wider size was saved and restored at the next launch.
"""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QSizePolicy

from explorer.widgets.texts import breakable


def shrinkable(label: QLabel, *, wrap: bool = True) -> QLabel:
    """``label`` asks the layout for no width of its own (it takes what it is given) and wraps its text; text that
    does not fit is clipped rather than growing the window. Returns ``label``."""
    label.setWordWrap(wrap)
    label.setMinimumWidth(1)
    policy = label.sizePolicy()
    policy.setHorizontalPolicy(QSizePolicy.Policy.Ignored)
    label.setSizePolicy(policy)
    return label


class PathLabel(QLabel):
    """A :func:`shrinkable` label whose text may hold file paths: they may break after a separator, so a long path
    wraps onto the next line instead of running off the edge."""

    def __init__(self, text: str = "", parent=None) -> None:
        super().__init__(parent)
        self._plain = ""
        shrinkable(self)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt name
        self._plain = text
        super().setText(breakable(text))

    def text(self) -> str:
        """The text as it was set (without the break opportunities the label draws with)."""
        return self._plain
