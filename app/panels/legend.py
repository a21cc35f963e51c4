"""Legend: class names with their colour and instance count; unticking hides a class."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from ..canvas.colours import class_colours


class LegendPanel(QWidget):
    hidden_classes_changed = Signal(frozenset)
    class_renamed = Signal(int, str)  # class index, new name (double-click a name to edit)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.tree = QTreeWidget(self)
        self.tree.setHeaderLabels(["Class", "Count"])
        self.tree.setRootIsDecorated(False)
        self.tree.itemChanged.connect(self._item_changed)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tree)
        self._names: list[str] = []
        self._hidden: set[int] = set()

    def set_classes(self, names: list[str], counts: np.ndarray | None = None) -> None:
        """Class names (index = class id) and per-class counts of the shown instances."""
        names = list(names)
        counts = np.zeros(len(names), np.int64) if counts is None else np.asarray(counts)
        if len(counts) > len(names):  # results with classes the model's names do not cover
            names += [f"class {i}" for i in range(len(names), len(counts))]
        self._names = names
        self.tree.blockSignals(True)
        self.tree.clear()
        colours = class_colours(np.arange(len(names)))
        for i, name in enumerate(names):
            item = QTreeWidgetItem([name, str(int(counts[i]) if i < len(counts) else 0)])
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable
                          | Qt.ItemFlag.ItemIsEditable)
            item.setCheckState(0, Qt.CheckState.Unchecked if i in self._hidden
                               else Qt.CheckState.Checked)
            swatch = QPixmap(12, 12)
            swatch.fill(QColor(*(int(c) for c in colours[i])))
            item.setIcon(0, QIcon(swatch))
            item.setTextAlignment(1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.tree.addTopLevelItem(item)
        self.tree.blockSignals(False)

    def set_counts(self, classes: np.ndarray) -> None:
        """Update counts from the shown instances' class ids."""
        counts = np.bincount(np.asarray(classes, np.int64), minlength=len(self._names))
        if len(counts) > len(self._names):
            self.set_classes(self._names, counts)
            return
        self.tree.blockSignals(True)
        for i in range(self.tree.topLevelItemCount()):
            self.tree.topLevelItem(i).setText(1, str(int(counts[i])))
        self.tree.blockSignals(False)

    def counts(self) -> dict[str, int]:
        return {self.tree.topLevelItem(i).text(0): int(self.tree.topLevelItem(i).text(1))
                for i in range(self.tree.topLevelItemCount())}

    def hidden_classes(self) -> frozenset:
        return frozenset(self._hidden)

    def _item_changed(self, item: QTreeWidgetItem, column: int) -> None:
        i = self.tree.indexOfTopLevelItem(item)
        name = item.text(0).strip()
        if column == 0 and i < len(self._names) and name != self._names[i]:
            if name:
                self._names[i] = name
                self.class_renamed.emit(i, name)
            else:  # an empty name is not a name: put the old one back
                self.tree.blockSignals(True)
                item.setText(0, self._names[i])
                self.tree.blockSignals(False)
            return
        if item.checkState(0) == Qt.CheckState.Checked:
            self._hidden.discard(i)
        else:
            self._hidden.add(i)
        self.hidden_classes_changed.emit(frozenset(self._hidden))
