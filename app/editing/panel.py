"""The review dock (counts, filters, brush size, overlap rule, next unreviewed) and the undo
history dock."""
from __future__ import annotations

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout,
                               QLabel, QPushButton, QSizePolicy, QSpinBox, QUndoView, QVBoxLayout,
                               QWidget)


class ReviewPanel(QWidget):
    def __init__(self, controller, parent=None) -> None:
        super().__init__(parent)
        self.c = controller
        # short lines, not word wrap: a wrapped label asks its dock for less height than its
        # text needs, and the dock squeezed it (the counts' last line was cut off at 1200x800)
        self.counts = QLabel("", self)
        self.counts.setToolTip("assisted: cells the model drew at your request (Box prompt "
                               "tool, accepted candidates)")
        self.low_score = QCheckBox("Only scores below", self)
        self.score_limit = QDoubleSpinBox(self)
        self.score_limit.setRange(0.0, 1.0)
        self.score_limit.setSingleStep(0.05)
        self.score_limit.setValue(0.5)
        self.class_filter = QComboBox(self)
        self.overlap = QCheckBox("Allow overlapping instances", self)
        self.overlap.setToolTip("Off: pixels added to an instance are taken from the others "
                                "(a pixel belongs to one instance). On: others are untouched.")
        self.brush = QSpinBox(self)
        self.brush.setRange(1, 200)
        self.brush.setValue(controller.brush_radius)
        self.brush.setSuffix(" px")
        self.next_button = QPushButton("Next unreviewed image (N)", self)

        score_row = QHBoxLayout()
        score_row.addWidget(self.low_score)
        score_row.addWidget(self.score_limit)
        form = QFormLayout()
        form.addRow("Class", self.class_filter)
        form.addRow("Brush radius", self.brush)
        layout = QVBoxLayout(self)
        layout.addWidget(self.counts)
        layout.addLayout(score_row)
        layout.addLayout(form)
        layout.addWidget(self.overlap)
        layout.addWidget(self.next_button)
        layout.addStretch(1)

        self.low_score.toggled.connect(self._filters)
        self.score_limit.valueChanged.connect(self._filters)
        self.class_filter.currentIndexChanged.connect(self._filters)
        self.overlap.toggled.connect(lambda on: setattr(self.c, "allow_overlap", bool(on)))
        self.brush.valueChanged.connect(lambda v: setattr(self.c, "brush_radius", int(v)))
        for w in (self.counts, self.low_score, self.score_limit, self.class_filter, self.brush,
                  self.overlap, self.next_button):
            # each row keeps the height it needs: the dock's minimum height is the panel's
            # full height, so a small window never squeezes text or spin boxes
            w.setSizePolicy(w.sizePolicy().horizontalPolicy(), QSizePolicy.Policy.Fixed)
        self.next_button.clicked.connect(self.c.next_unreviewed)
        self.c.changed.connect(self.refresh)
        self.set_classes([])

    def set_classes(self, names: list[str]) -> None:
        self.class_filter.blockSignals(True)
        current = self.class_filter.currentData()
        self.class_filter.clear()
        self.class_filter.addItem("All classes", None)
        for k, name in enumerate(names):
            self.class_filter.addItem(f"{k + 1}: {name}", k)
        i = self.class_filter.findData(current)
        self.class_filter.setCurrentIndex(max(i, 0))
        self.class_filter.blockSignals(False)

    def _filters(self) -> None:
        limit = self.score_limit.value() if self.low_score.isChecked() else None
        self.c.set_filter(max_score=limit, only_class=self.class_filter.currentData())

    def refresh(self) -> None:
        if self.brush.value() != self.c.brush_radius:
            self.brush.blockSignals(True)
            self.brush.setValue(self.c.brush_radius)
            self.brush.blockSignals(False)
        c = self.c.counts()
        if not c:
            self.counts.setText("no image")
            return
        reviewed = "reviewed" if self.c.ann is not None and self.c.ann.reviewed else "not reviewed"
        self.counts.setText(
            f"{c['instances']} instances ({c['shown']} shown)\n"
            f"image {reviewed}\n"
            f"accepted {c['accepted']} · rejected {c['rejected']}\n"
            f"edited {c['edited']} · drawn {c['drawn']} · deleted {c['deleted']}\n"
            f"assisted {c.get('assisted', 0)}")


def history_view(undo_stack, parent=None) -> QUndoView:
    view = QUndoView(undo_stack, parent)
    view.setEmptyLabel("(image as opened)")
    return view
