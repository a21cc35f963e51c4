"""Display panel: image contrast (auto percentile stretch, min/max sliders, channel) and
overlay style (fill, opacity, contours, colouring, boxes/labels/scores)."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel,
                               QPushButton, QSlider, QWidget)

from ..canvas.contrast import Contrast

_STEPS = 1000  # slider resolution over the data range


class DisplayPanel(QWidget):
    contrast_changed = Signal(object)  # Contrast
    style_changed = Signal(dict)  # OverlayStyle field changes
    annotations_changed = Signal(dict)  # boxes/labels/scores

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._contrast: Contrast | None = None
        self._auto: Contrast | None = None
        form = QFormLayout(self)
        self.channel = QComboBox(self)
        self.channel.currentIndexChanged.connect(self._channel_changed)
        self.low = QSlider(Qt.Orientation.Horizontal, self)
        self.high = QSlider(Qt.Orientation.Horizontal, self)
        for s in (self.low, self.high):
            s.setRange(0, _STEPS)
            s.valueChanged.connect(self._sliders_moved)
        self.low_label, self.high_label = QLabel(self), QLabel(self)
        for lab in (self.low_label, self.high_label):
            lab.setMinimumWidth(48)
        self.auto = QPushButton("Auto", self)
        self.auto.setToolTip("Percentile stretch (1% - 99.8%) per channel")
        self.auto.clicked.connect(self.reset_contrast)
        form.addRow("Channel", self.channel)
        form.addRow("Min", _row(self.low, self.low_label))
        form.addRow("Max", _row(self.high, self.high_label))
        form.addRow(self.auto)

        self.show_overlay = QCheckBox("Show overlay", self)
        self.show_overlay.setChecked(True)
        self.fill = QCheckBox("Fill", self)
        self.fill.setChecked(True)
        self.opacity = QSlider(Qt.Orientation.Horizontal, self)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(45)
        self.contours = QCheckBox("Contours", self)
        self.contours.setChecked(True)
        self.colour_by = QComboBox(self)
        self.colour_by.addItem("instance", "instance")
        self.colour_by.addItem("class", "class")
        self.boxes = QCheckBox("Boxes", self)
        self.labels = QCheckBox("Labels", self)
        self.scores = QCheckBox("Scores", self)
        form.addRow(self.show_overlay)
        form.addRow(self.fill, self.contours)
        form.addRow("Opacity", self.opacity)
        form.addRow("Colour by", self.colour_by)
        form.addRow(_row(self.boxes, self.labels, self.scores))

        self.show_overlay.toggled.connect(lambda on: self.style_changed.emit({"visible": on}))
        self.fill.toggled.connect(lambda on: self.style_changed.emit({"fill": on}))
        self.contours.toggled.connect(lambda on: self.style_changed.emit({"contours": on}))
        self.opacity.valueChanged.connect(
            lambda v: self.style_changed.emit({"opacity": v / 100}))
        self.colour_by.currentIndexChanged.connect(
            lambda _: self.style_changed.emit({"colour_by": self.colour_by.currentData()}))
        for box in (self.boxes, self.labels, self.scores):
            box.toggled.connect(self._annotations)

    # ------------------------------------------------------------------ contrast
    def set_contrast(self, contrast: Contrast, is_auto: bool = True) -> None:
        """Show a new image's contrast (does not emit)."""
        self._contrast = Contrast(contrast.limits.copy(), contrast.data_range, contrast.channel,
                                  contrast.percentiles)
        if is_auto:
            self._auto = Contrast(contrast.limits.copy(), contrast.data_range, None,
                                  contrast.percentiles)
        self.channel.blockSignals(True)
        self.channel.clear()
        n = contrast.num_channels
        self.channel.addItem("all" if n > 1 else "gray", None)
        if n > 1:
            for c in range(n):
                self.channel.addItem(f"channel {c + 1}", c)
        self.channel.setCurrentIndex(0 if contrast.channel is None else contrast.channel + 1)
        self.channel.blockSignals(False)
        self._sync_sliders()

    def contrast(self) -> Contrast | None:
        return self._contrast

    def reset_contrast(self) -> None:
        if self._auto is None:
            return
        channel = self._contrast.channel if self._contrast else None
        self._contrast = Contrast(self._auto.limits.copy(), self._auto.data_range, channel,
                                  self._auto.percentiles)
        self._sync_sliders()
        self.contrast_changed.emit(self._contrast)

    def _edited_channels(self) -> list[int]:
        c = self._contrast
        return list(range(c.num_channels)) if c.channel is None else [c.channel]

    def _sync_sliders(self) -> None:
        c = self._contrast
        if c is None:
            return
        lo, hi = c.limits[self._edited_channels()].mean(axis=0)
        for slider, value, label in ((self.low, lo, self.low_label),
                                     (self.high, hi, self.high_label)):
            slider.blockSignals(True)
            slider.setValue(self._to_slider(value))
            slider.blockSignals(False)
            label.setText(f"{value:.4g}")

    def _to_slider(self, value: float) -> int:
        a, b = self._contrast.data_range
        return int(round((value - a) / (b - a) * _STEPS)) if b > a else 0

    def _from_slider(self, pos: int) -> float:
        a, b = self._contrast.data_range
        return a + (b - a) * pos / _STEPS

    def _apply_limits(self, low: float, high: float) -> None:
        if high <= low:
            high = low + (self._contrast.data_range[1] - self._contrast.data_range[0]) / _STEPS
        limits = self._contrast.limits.copy()
        limits[self._edited_channels()] = (low, high)
        self._contrast.limits = limits

    def _sliders_moved(self) -> None:
        if self._contrast is None:
            return
        self._apply_limits(self._from_slider(self.low.value()), self._from_slider(self.high.value()))
        lo, hi = self._contrast.limits[self._edited_channels()].mean(axis=0)
        self.low_label.setText(f"{lo:.4g}")
        self.high_label.setText(f"{hi:.4g}")
        self.contrast_changed.emit(self._contrast)

    def _channel_changed(self, _index: int) -> None:
        if self._contrast is None:
            return
        self._contrast.channel = self.channel.currentData()
        self._sync_sliders()
        self.contrast_changed.emit(self._contrast)

    # ------------------------------------------------------------------ overlay
    def _annotations(self) -> None:
        self.annotations_changed.emit({"boxes": self.boxes.isChecked(),
                                       "labels": self.labels.isChecked(),
                                       "scores": self.scores.isChecked()})


def _row(*widgets) -> QWidget:
    w = QWidget()
    layout = QHBoxLayout(w)
    layout.setContentsMargins(0, 0, 0, 0)
    for x in widgets:
        layout.addWidget(x)
    return w

