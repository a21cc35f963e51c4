"""Models panel: the two models' config + checkpoint, the device, run buttons and progress."""
from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QSignalBlocker, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QHBoxLayout,
                               QLabel, QLineEdit, QProgressBar, QPushButton, QSpinBox,
                               QToolButton, QVBoxLayout, QWidget)

from cellseg.core.tiling.grid import TileSettings

from .. import file_dialogs
from ..icons import icon

MODEL_TITLES = {"cascade": "Cascade Mask R-CNN", "pointrend": "PointRend"}


def available_devices() -> list[str]:
    devices = ["auto", "cpu"]
    try:
        import torch

        if torch.cuda.is_available():
            devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    except Exception:  # a broken CUDA install must not stop the app from starting
        pass
    return devices


class _PathRow(QWidget):
    edited = Signal()  # focus left the field (the pair may be half typed)
    entered = Signal()  # Enter pressed, or a file chosen in the browser: apply now

    def __init__(self, placeholder: str, file_filter: str, parent=None) -> None:
        super().__init__(parent)
        self.edit = QLineEdit(self)
        self.edit.setPlaceholderText(placeholder)
        self.edit.editingFinished.connect(self.edited)
        self.edit.returnPressed.connect(self.entered)
        button = QToolButton(self)
        button.setIcon(icon("browse"))
        button.setToolTip(f"Choose {placeholder}")
        button.clicked.connect(self._browse)
        self._filter = file_filter
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit)
        layout.addWidget(button)

    def _browse(self) -> None:
        start = str(Path(self.edit.text()).parent) if self.edit.text() else ""
        path, _ = file_dialogs.get_open_file_name(self, self.edit.placeholderText(), start, self._filter)
        if path:
            self.edit.setText(path)
            self.entered.emit()

    def text(self) -> str:
        return self.edit.text().strip()


def _checkpoint_beside(config: str) -> str:
    """The checkpoint a training run wrote next to ``config`` (model_final.pth), or ""."""
    path = Path(config).with_name("model_final.pth")
    return str(path) if path.is_file() else ""


class ModelsPanel(QWidget):
    _devices_found = Signal(list)
    model_changed = Signal(str, str, str)  # key, config, weights
    device_changed = Signal(str)
    precision_changed = Signal(str)  # "exact" or "fast"
    tiling_changed = Signal(object)  # TileSettings, or None: every image whole
    run_requested = Signal()
    run_all_requested = Signal()
    cancel_requested = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        form = QFormLayout()
        self.rows: dict[str, tuple[_PathRow, _PathRow]] = {}
        self.pending: dict[str, QLabel] = {}
        self._applied: dict[str, tuple[str, str]] = {}  # the pair the service has, per model
        for key, title in MODEL_TITLES.items():
            config = _PathRow("config.yaml", "Detectron2 config (*.yaml *.yml)", self)
            weights = _PathRow("checkpoint", "Checkpoint (*.pth *.pkl)", self)
            # config and weights are applied as a pair: a config typed next to the old weights
            # is not loaded with them (176 mismatched weights); Enter applies (or runs)
            config.edited.connect(lambda k=key: self._emit_model(k, complete_only=True))
            weights.edited.connect(lambda k=key: self._emit_model(k, complete_only=True))
            config.entered.connect(lambda k=key: self._entered(k, "config"))
            weights.entered.connect(lambda k=key: self._entered(k, "weights"))
            form.addRow(QLabel(f"<b>{title}</b>"))
            form.addRow("Config", config)
            form.addRow("Weights", weights)
            self.rows[key] = (config, weights)
            self.pending[key] = QLabel("Press Enter to load this config with these weights",
                                       self)
            self.pending[key].setWordWrap(True)
            self.pending[key].setVisible(False)
            form.addRow(self.pending[key])
        self.device = QComboBox(self)
        # "auto" and "cpu" at once; the GPUs once torch is imported off the GUI thread
        # (importing torch here took most of a start-up: 4-13 s on a busy CPU)
        self.device.addItems(["auto", "cpu"])
        self._devices_found.connect(self.add_devices)
        threading.Thread(target=self._find_devices, name="cellseg-devices", daemon=True).start()
        self.device.currentTextChanged.connect(self.device_changed)
        form.addRow("Device", self.device)
        self.fast = QCheckBox("Fast precision (16-bit backbone)", self)
        self.fast.setToolTip(
            "Runs the backbone in bfloat16 on CPUs with AVX512-BF16/AMX and in float16 on "
            "CUDA GPUs: faster, with slightly different masks and scores than Detectron2 "
            "gives. Off (exact, float32) by default. Without such hardware it runs exact "
            "and says so. Changing it re-runs the models.")
        self.fast.toggled.connect(
            lambda on: self.precision_changed.emit("fast" if on else "exact"))
        form.addRow("Precision", self.fast)
        form.addRow("Tiles", self._tiles_row())
        self.device_label = QLabel("not loaded", self)
        form.addRow("Running on", self.device_label)

        self.run_button = QPushButton(icon("run"), "Run", self)
        self.run_button.setToolTip("Run the models on the current image")
        self.run_all_button = QPushButton(icon("run_all"), "Run all", self)
        self.cancel_button = QPushButton(icon("cancel"), "Cancel", self)
        self.cancel_button.setEnabled(False)
        self.run_button.clicked.connect(self.run_requested)
        self.run_all_button.clicked.connect(self.run_all_requested)
        self.cancel_button.clicked.connect(self.cancel_requested)
        buttons = QHBoxLayout()
        for b in (self.run_button, self.run_all_button, self.cancel_button):
            buttons.addWidget(b)
        self.progress = QProgressBar(self)
        self.progress.setVisible(False)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)

    def _emit_model(self, key: str, complete_only: bool = False) -> None:
        """Apply the pair; with ``complete_only`` (focus left a field) only once both fields
        differ from the applied pair, or the other one was empty."""
        config, weights = (r.text() for r in self.rows[key])
        if not (config and weights) or (config, weights) == self._applied.get(key):
            return
        old = self._applied.get(key, ("", ""))
        if complete_only and old[0] and old[1] and (config == old[0]) != (weights == old[1]):
            self.pending_label(key, True)  # half a pair: wait for the other field or Enter
            return
        self._applied[key] = (config, weights)
        self.pending_label(key, False)
        self.model_changed.emit(key, config, weights)

    def _entered(self, key: str, field: str) -> None:
        config, weights = (r.text() for r in self.rows[key])
        if field == "config" and config and (config, weights) != self._applied.get(key):
            sibling = _checkpoint_beside(config)
            old_weights = self._applied.get(key, ("", ""))[1]
            if sibling and (not weights or weights == old_weights):
                self.rows[key][1].edit.setText(sibling)  # the run's own checkpoint
        if (config, self.rows[key][1].text()) == self._applied.get(key):
            self.run_requested.emit()  # nothing to change: Enter runs, as the Run button
            return
        self._emit_model(key)

    def pending_label(self, key: str, pending: bool) -> None:
        self.pending[key].setVisible(pending)

    def set_model_paths(self, key: str, config: str, weights: str, emit: bool = True) -> None:
        c, w = self.rows[key]
        c.edit.setText(str(config))
        w.edit.setText(str(weights))
        if emit:
            self._emit_model(key)
        else:
            self._applied[key] = (c.text(), w.text())
            self.pending_label(key, False)

    def model_paths(self, key: str) -> tuple[str, str]:
        c, w = self.rows[key]
        return c.text(), w.text()

    def _tiles_row(self) -> QWidget:
        """Tiled prediction for large images: on/off, tile side and overlap in image pixels."""
        row = QWidget(self)
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        self.tiled = QCheckBox("Tile images larger than", row)
        self.tiled.setToolTip(
            "Large images are predicted tile by tile at their own resolution instead of being "
            "shrunk to the model's input size (cells of a 6,000 px field would shrink six-fold). "
            "Cells cut by tile seams are merged, duplicates from the overlaps removed. Smaller "
            "images are predicted whole, as without tiles. Changing it re-runs the models.")
        self.tile_size = QSpinBox(row)
        self.tile_size.setRange(128, 8192)
        self.tile_size.setSingleStep(128)
        self.tile_size.setValue(512)  # the model's per-image cap applies per tile: keep tiles small
        self.tile_size.setSuffix(" px")
        self.tile_overlap = QSpinBox(row)
        self.tile_overlap.setRange(0, 1024)
        self.tile_overlap.setSingleStep(16)
        self.tile_overlap.setValue(64)
        self.tile_overlap.setPrefix("overlap ")
        self.tile_overlap.setSuffix(" px")
        self.tile_overlap.setToolTip("Pixels neighbouring tiles share: wider than the largest cell")
        for w in (self.tiled, self.tile_size, self.tile_overlap):
            layout.addWidget(w)
        self.tiled.toggled.connect(self._emit_tiling)
        self.tile_size.editingFinished.connect(self._emit_tiling)
        self.tile_overlap.editingFinished.connect(self._emit_tiling)
        return row

    def tiling(self) -> TileSettings | None:
        if not self.tiled.isChecked():
            return None
        overlap = min(self.tile_overlap.value(), self.tile_size.value() // 2)
        return TileSettings(self.tile_size.value(), overlap, 1.0)

    def set_tiling(self, tiling: TileSettings | None) -> None:
        """Show ``tiling`` without emitting (the restored setting)."""
        blockers = [QSignalBlocker(w) for w in (self.tiled, self.tile_size, self.tile_overlap)]
        if tiling is not None:
            self.tile_size.setValue(tiling.tile)
            self.tile_overlap.setValue(tiling.overlap)
        self.tiled.setChecked(tiling is not None)
        del blockers

    def _emit_tiling(self) -> None:
        self.tiling_changed.emit(self.tiling())

    def set_device(self, device: str) -> None:
        if self.device.findText(device) < 0:
            if device.startswith("cuda"):  # remembered; the GPU list may still be coming
                self.device.addItem(device)
            else:
                device = "auto"
        self.device.setCurrentText(device)

    def precision(self) -> str:
        return "fast" if self.fast.isChecked() else "exact"

    def set_precision(self, precision: str) -> None:
        self.fast.setChecked(precision == "fast")

    def _find_devices(self) -> None:
        devices = available_devices()
        try:
            self._devices_found.emit(devices)
        except RuntimeError:  # the panel was closed meanwhile
            pass

    def add_devices(self, devices: list[str]) -> None:
        """Add devices found after start-up (cuda:N), keeping the current choice."""
        for d in devices:
            if self.device.findText(d) < 0:
                self.device.addItem(d)

    def set_running_device(self, text: str) -> None:
        self.device_label.setText(text)

    def set_batch(self, done: int, total: int, active: bool) -> None:
        self.progress.setVisible(active)
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.progress.setFormat(f"{done} / {total}")
        self.run_all_button.setEnabled(not active)

    def set_cancellable(self, enabled: bool) -> None:
        """Cancel is enabled while a model run (this image's, a prefetch or a batch) is on."""
        self.cancel_button.setEnabled(enabled)
