"""Wheel events that scroll a panel instead of changing the control under the pointer.

Scrolling the Controls panel with the mouse wheel used to move whatever slider, spin box or
combo box passed under the pointer (score 0.50 -> 0.41 while scrolling). As in QuPath and most
desktop apps, such a control now takes the wheel only once it has the keyboard focus (clicked or
tabbed into); otherwise the wheel scrolls the enclosing scroll area.
"""
from __future__ import annotations

from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt
from PySide6.QtWidgets import (QAbstractScrollArea, QAbstractSlider, QAbstractSpinBox, QComboBox,
                               QScrollBar, QWidget)

GUARDED = (QAbstractSlider, QAbstractSpinBox, QComboBox)


class WheelGuard(QObject):
    """Event filter: an unfocused guarded control hands its wheel events to the scroll area."""

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if event.type() != QEvent.Type.Wheel or not isinstance(obj, QWidget) or obj.hasFocus():
            return False
        area = obj.parentWidget()
        while area is not None and not isinstance(area, QAbstractScrollArea):
            area = area.parentWidget()
        if area is not None:
            QCoreApplication.sendEvent(area.verticalScrollBar(), event)
        return True  # never to the control itself


def guard_wheel(root: QWidget) -> WheelGuard:
    """Guard every slider, spin box and combo box under ``root`` (present now).

    Args:
        root: a panel; its guarded controls stop taking focus from the wheel.

    Returns:
        The installed filter (parented to ``root``).
    """
    guard = WheelGuard(root)
    for kind in GUARDED:
        for w in root.findChildren(kind):
            if isinstance(w, QScrollBar):
                continue  # scroll bars (a combo box's list too) keep scrolling
            w.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # no focus from the wheel
            w.installEventFilter(guard)
    return guard
