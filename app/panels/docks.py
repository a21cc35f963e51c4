"""The window's dock layout: images on the left, the control panels (scrolling) and the legend
on the right."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget, QGroupBox, QScrollArea, QVBoxLayout, QWidget

from ..wheel_guard import guard_wheel


def make_docks(window, image_list: QWidget, panels: dict[str, QWidget], legend: QWidget
               ) -> dict[str, QDockWidget]:
    """Dock ``image_list`` left, the titled ``panels`` in one scroll area and ``legend`` right;
    returns the docks by name (images, controls, legend)."""
    left = QDockWidget("Images", window)
    left.setObjectName("images-dock")
    left.setWidget(image_list)
    window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, left)

    side = QWidget()
    side_layout = QVBoxLayout(side)
    for title, panel in panels.items():
        box = QGroupBox(title, side)
        box_layout = QVBoxLayout(box)
        box_layout.setContentsMargins(4, 4, 4, 4)
        box_layout.addWidget(panel)
        side_layout.addWidget(box)
    side_layout.addStretch(1)
    guard_wheel(side)  # (parented to side) the wheel scrolls the dock until a control is clicked
    scroll = QScrollArea(window)
    scroll.setWidgetResizable(True)
    scroll.setWidget(side)
    scroll.setMinimumWidth(330)
    right = QDockWidget("Controls", window)
    right.setObjectName("controls-dock")
    right.setWidget(scroll)
    window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, right)
    legend_dock = QDockWidget("Legend", window)
    legend_dock.setObjectName("legend-dock")
    legend_dock.setWidget(legend)
    window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, legend_dock)
    window.resizeDocks([left, right], [290, 350], Qt.Orientation.Horizontal)
    window.resizeDocks([right, legend_dock], [700, 160], Qt.Orientation.Vertical)
    return {"images": left, "controls": right, "legend": legend_dock}
