"""The window's message strip and status bar: errors, the running model job, the pixel and
instance under the cursor, zoom and device."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QStatusBar, QToolButton, QWidget

from cellseg.core.progress import TILE, TTA_PASS

from .icons import icon
from .workers import ModelInfo, RawKey


class ErrorBanner(QWidget):
    """A dismissable message strip above the canvas: errors never block the window."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.label = QLabel(self)
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton(self)
        close.setText("×")
        close.setAutoRaise(True)
        close.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 4, 4, 4)
        layout.addWidget(QLabel(self, pixmap=icon("error").pixmap(16, 16)))
        layout.addWidget(self.label, 1)
        layout.addWidget(close)
        self.setAutoFillBackground(True)
        self.setStyleSheet("ErrorBanner { background: #fbe3e1; } QLabel { color: #7a1f16; }")
        self.hide()

    def show_message(self, text: str) -> None:
        self.label.setText(text)
        self.show()

    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""


class StatusBarView(QObject):
    """The status bar's permanent labels, and the running model job's stage or TTA pass
    (with a progress bar) as the service reports it.

    Args:
        bar: the window's status bar (the labels are added to it).
        service: the window's :class:`InferenceService` (its run events).
        current_path: the current image's path (a job of another image is named by file).
    """

    def __init__(self, bar: QStatusBar, service, current_path) -> None:
        super().__init__(bar)
        self.bar = bar
        self.service = service
        self.current_path = current_path
        self.pixel_label = QLabel("", bar)
        self.instance_label = QLabel("", bar)
        self.zoom_label = QLabel("", bar)
        self.device_label = QLabel(f"device: {service.device}", bar)
        self.result_label = QLabel("", bar)  # which result is shown (plain / TTA)
        for w in (self.pixel_label, self.instance_label):
            w.setMinimumWidth(180)
        # the running model job: its stage or TTA pass (Esc cancels it)
        self.run_label = QLabel("", bar)
        self.run_progress = QProgressBar(bar)
        self.run_progress.setMaximumWidth(160)
        self.run_progress.setTextVisible(False)
        for w in (self.run_label, self.run_progress):
            w.setVisible(False)
            bar.addPermanentWidget(w)
        for w in (self.result_label, self.pixel_label, self.instance_label, self.zoom_label,
                  self.device_label):
            bar.addPermanentWidget(w)
        self.tta_step = ""  # "TTA pass k/n" of the running job, for its stage messages
        self.tile_step = ""  # "tile k/n" of a tiled run
        service.run_progress.connect(self._run_progress)
        service.models.started.connect(self._run_started)
        service.model_loaded.connect(self._model_loaded)

    @property
    def running(self) -> bool:
        return self.service.models.running_tag is not None

    def update_run_state(self) -> None:
        """The progress while a model job runs."""
        self.run_label.setVisible(self.running)
        self.run_progress.setVisible(self.running)

    def _run_name(self, key: RawKey) -> str:
        name = key.model + (" +TTA" if key.tta else "")
        return name if key.image == self.current_path() else f"{Path(key.image).name} {name}"

    def _run_started(self, key: RawKey) -> None:
        self.tta_step = self.tile_step = ""
        self.run_progress.setRange(0, 0)  # busy until the first TTA pass says how many
        self.run_label.setText(f"{self._run_name(key)}: starting")

    def _run_progress(self, key: RawKey, stage: str, done: int, total: int) -> None:
        if key != self.service.models.running_tag:
            return  # a late report of a job that ended
        if stage == TILE:  # the bar counts tiles; TTA passes and stages go in the text
            self.run_progress.setRange(0, total)
            self.run_progress.setValue(done)
            self.tile_step = text = f"tile {min(done + 1, total)}/{total}"
        elif stage == TTA_PASS:
            if not self.tile_step:
                self.run_progress.setRange(0, total)
                self.run_progress.setValue(done)
            self.tta_step = text = f"TTA pass {min(done + 1, total)}/{total}"
        else:
            text = stage if total == 1 else f"{stage} {done}/{total}"
            if self.tta_step:
                text = f"{self.tta_step}, {text}"
        if self.tile_step and stage != TILE:
            text = f"{self.tile_step}, {text}"
        self.run_label.setText(f"{self._run_name(key)}: {text}")

    def _model_loaded(self, info: ModelInfo) -> None:
        self.device_label.setText(f"device: {info.device}")
        if info.precision_note and "running exact" in info.precision_note:
            self.bar.showMessage(info.precision_note, 10000)  # fast fell back

    def show_cursor(self, x: int, y: int, value: str, instance: str) -> None:
        self.pixel_label.setText(f"x {x}  y {y}  value {value}")
        self.instance_label.setText(instance)

    def clear_cursor(self) -> None:
        self.pixel_label.setText("")
        self.instance_label.setText("")
