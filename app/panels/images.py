"""The image list: name, review status and instance count of every image of the open source."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QAbstractItemView, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from ..icons import icon

STATUSES = ("not run", "running", "predicted", "annotated", "edited", "reviewed", "error")
_ICON = {"not run": "not_run", "running": "running", "predicted": "predicted", "edited": "edited",
         "annotated": "annotated", "reviewed": "reviewed", "error": "error"}


class ImageListPanel(QWidget):
    current_changed = Signal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.tree = QTreeWidget(self)
        self.tree.setHeaderLabels(["Image", "Status", "Cells"])
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)  # fast with thousands of images
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setColumnWidth(0, 130)
        self.tree.setColumnWidth(1, 95)
        self.tree.setColumnWidth(2, 45)
        self.setMinimumWidth(200)
        self.tree.currentItemChanged.connect(self._current_changed)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tree)

    def set_entries(self, names: list[str]) -> None:
        self.tree.blockSignals(True)
        self.tree.clear()
        items = []
        for i, name in enumerate(names):
            item = QTreeWidgetItem([name, "not run", ""])
            item.setData(0, Qt.ItemDataRole.UserRole, i)
            item.setIcon(1, icon("not_run"))
            item.setToolTip(0, name)
            items.append(item)
        self.tree.addTopLevelItems(items)
        self.tree.blockSignals(False)

    def count(self) -> int:
        return self.tree.topLevelItemCount()

    def set_status(self, index: int, status: str, count: int | None = None,
                   tooltip: str = "") -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        item = self.tree.topLevelItem(index)
        if item is None:
            return
        item.setText(1, status)
        item.setIcon(1, icon(_ICON[status]))
        item.setToolTip(1, tooltip or status)
        if count is not None:
            item.setText(2, str(count))
            item.setTextAlignment(2, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def status(self, index: int) -> str:
        return self.tree.topLevelItem(index).text(1)

    def cell_count(self, index: int) -> str:
        return self.tree.topLevelItem(index).text(2)

    def set_current(self, index: int) -> None:
        item = self.tree.topLevelItem(index)
        if item is not None:
            self.tree.setCurrentItem(item)

    def current(self) -> int:
        item = self.tree.currentItem()
        return -1 if item is None else int(item.data(0, Qt.ItemDataRole.UserRole))

    def _current_changed(self, item, _previous) -> None:
        if item is not None:
            self.current_changed.emit(int(item.data(0, Qt.ItemDataRole.UserRole)))
