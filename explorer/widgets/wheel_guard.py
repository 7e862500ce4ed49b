"""Scrolling a form with the mouse wheel must not change the settings the pointer passes over: a spin box or a
combo box takes wheel steps only once it has the keyboard focus (a click or Tab); until then the wheel scrolls the
form around it."""

from __future__ import annotations

from PySide6.QtCore import QCoreApplication, QEvent, QObject
from PySide6.QtWidgets import QAbstractScrollArea, QAbstractSpinBox, QApplication, QComboBox, QWidget


class WheelGuard(QObject):
    """Installed on the application for one form: wheel events over its unfocused spin and combo boxes go to the
    form's scroll area instead."""

    def __init__(self, form: QWidget, scroll: QAbstractScrollArea) -> None:
        super().__init__(form)
        self.form, self.scroll = form, scroll
        app = QApplication.instance()
        if app is not None:
            app.installEventFilter(self)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if (event.type() == QEvent.Type.Wheel and isinstance(obj, (QAbstractSpinBox, QComboBox))
                and not obj.hasFocus() and self.form.isAncestorOf(obj)):
            QCoreApplication.sendEvent(self.scroll.verticalScrollBar(), event)
            return True
        return False
