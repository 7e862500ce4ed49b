"""Labels that never widen the window: a long file path in a label used to push the window past the screen
(1280 -> 1780 px after a query by image), and the wider size was saved and restored at the next launch.
"""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QSizePolicy

from explorer.widgets.texts import breakable


# what the readouts print: dashes, per cent and plus-minus signs may come from a fallback font with taller lines
_PROBE_LINE = "Xg 0.5 % – — ± ≤ · ‖"


def room_for_lines(label: QLabel, lines: int) -> QLabel:
    """Give ``label`` at least the height of ``lines`` lines of text like its own, as QLabel lays them out (a
    multiple of the font's line spacing fell a pixel short where a dash came from a taller fallback font, and the
    last line was clipped). Returns ``label``."""
    n = max(1, int(lines))
    probe = QLabel("\n".join([_PROBE_LINE] * n))
    probe.setFont(label.font())
    probe.setMargin(label.margin())
    probe.setIndent(label.indent())
    # and a few pixels to spare: the wrapped text measured one more than the probe with a CI machine's fonts
    label.setMinimumHeight(max(probe.sizeHint().height(), n * label.fontMetrics().lineSpacing() + 2) + 3)
    return label


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
