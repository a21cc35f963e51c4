"""The review window: image list | canvas | side panels, menus and status bar.

It shows one image at a time: decodes it (the last few are kept for stepping back and forth),
has :class:`InferenceService` run the models in its threads (raw outputs cached there), composes
them with ``core.postprocess.pipeline.compose`` off the GUI thread and hands the ``Instances`` to
the canvas. Per image it keeps the composed result, the edits made without a project (with a
project open, the editing controller saves each edit to it) and whether it was marked reviewed.

Editing tools and the Project menu, import/export, Train > Fine-tune and the first-run guidance
are not built here: ``app.main`` installs them on the window (``install_editing``,
``install_interop``, ``install_training``, ``install_first_run``).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QKeySequence, QUndoStack
from PySide6.QtWidgets import (QDockWidget, QGroupBox, QHBoxLayout, QLabel,
                               QMainWindow, QMessageBox, QProgressBar, QScrollArea, QToolButton,
                               QVBoxLayout, QWidget)

from cellseg.core.progress import TILE, TTA_PASS
from cellseg.core.errors import CellsegError
from cellseg.core.postprocess.pipeline import Settings
from cellseg.core.review.sources import ImageSource, open_source
from cellseg.core.structures import Instances

from .canvas import ImageCanvas
from .canvas.overlay import prepare_labels
from .icons import icon
from .panels import DisplayPanel, ImageListPanel, LegendPanel, ModelsPanel, PostprocessPanel
from .settings import MODEL_KEYS, AppSettings
from .wheel_guard import guard_wheel
from .workers import InferenceService, ModelInfo, RawKey
from . import file_dialogs

IMAGE_CACHE = 4  # decoded images kept for quick back-and-forth stepping
# what the status bar's result label says while / after test-time augmentation runs
PLAIN_WHILE_TTA = "plain prediction shown; TTA running..."
PLAIN_TTA_CANCELLED = "plain prediction shown; TTA cancelled"
TTA_SHOWN = "TTA"
RUN_CANCELLED = "run cancelled: Run (Ctrl+Return) runs it again"


def compose_raw(raw: dict[str, Instances], settings: Settings):
    """Post-process raw model outputs with the panel's settings, and lay out the overlay's label
    image for the result: both O(pixels)/O(instances) work, run in the light thread."""
    from cellseg.core.postprocess.pipeline import compose

    instances = compose(raw, settings)
    return instances, prepare_labels(instances, instances.image_size)


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


class MainWindow(QMainWindow):
    instances_changed = Signal(object)  # Instances | None now shown for the current image
    image_shown = Signal(int)  # index of the image now on the canvas
    error_shown = Signal(str)

    def __init__(self, settings: AppSettings | None = None, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("cellseg-gui")
        self.settings = settings if settings is not None else AppSettings()
        self.service = InferenceService(self.settings.device(), self)
        self.undo_stack = QUndoStack(self)
        self.source: ImageSource | None = None
        self.index = -1
        self.image: np.ndarray | None = None
        self.class_names: list[str] = []
        self.last_error = ""
        self._shown: Instances | None = None
        self._composed: dict[int, tuple[object, Instances]] = {}
        self._prepared = None  # (instances, labels+codes) of the latest composed result
        self._edited: dict[int, Instances] = {}
        self._reviewed: set[int] = set()
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()
        self._wanted = None  # compose key of what the canvas should show
        self._wanted_label = ""  # the result label that goes with it
        # the current image's runs the user cancelled: not queued again until Run (or another
        # image), so that a threshold change does not restart a cancelled TTA
        self._cancelled_keys: set[RawKey] = set()
        self._tta_step = ""  # "TTA pass k/n" of the running job, for its stage messages
        self._tile_step = ""  # "tile k/n" of a tiled run

        self._build_widgets()
        self._build_menus()
        self._connect()
        self._restore()

    # ================================================================== construction
    def _build_widgets(self) -> None:
        self.canvas = ImageCanvas(self)
        self.banner = ErrorBanner(self)
        centre = QWidget(self)
        layout = QVBoxLayout(centre)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.banner)
        layout.addWidget(self.canvas, 1)
        self.setCentralWidget(centre)

        self.image_list = ImageListPanel(self)
        self.models_panel = ModelsPanel(self)
        self.post_panel = PostprocessPanel(self)
        self.display_panel = DisplayPanel(self)
        self.legend = LegendPanel(self)
        self.legend.setMinimumHeight(120)

        left = QDockWidget("Images", self)
        left.setObjectName("images-dock")
        left.setWidget(self.image_list)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, left)

        side = QWidget()
        side_layout = QVBoxLayout(side)
        for title, panel in (("Models", self.models_panel), ("Post-processing", self.post_panel),
                             ("Display", self.display_panel)):
            box = QGroupBox(title, side)
            box_layout = QVBoxLayout(box)
            box_layout.setContentsMargins(4, 4, 4, 4)
            box_layout.addWidget(panel)
            side_layout.addWidget(box)
        side_layout.addStretch(1)
        self._wheel_guard = guard_wheel(side)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setWidget(side)
        scroll.setMinimumWidth(330)
        right = QDockWidget("Controls", self)
        right.setObjectName("controls-dock")
        right.setWidget(scroll)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, right)
        legend = QDockWidget("Legend", self)
        legend.setObjectName("legend-dock")
        legend.setWidget(self.legend)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, legend)
        self.docks = {"images": left, "controls": right, "legend": legend}
        self.resizeDocks([left, right], [290, 350], Qt.Orientation.Horizontal)
        self.resizeDocks([right, legend], [700, 160], Qt.Orientation.Vertical)

        self.pixel_label = QLabel("", self)
        self.instance_label = QLabel("", self)
        self.zoom_label = QLabel("", self)
        self.device_label = QLabel(f"device: {self.service.device}", self)
        self.result_label = QLabel("", self)  # which result is shown (plain / TTA)
        for w in (self.pixel_label, self.instance_label):
            w.setMinimumWidth(180)
        # the running model job: its stage or TTA pass (Esc cancels it)
        self.run_label = QLabel("", self)
        self.run_progress = QProgressBar(self)
        self.run_progress.setMaximumWidth(160)
        self.run_progress.setTextVisible(False)
        bar = self.statusBar()
        for w in (self.run_label, self.run_progress):
            w.setVisible(False)
            bar.addPermanentWidget(w)
        bar.addPermanentWidget(self.result_label)
        bar.addPermanentWidget(self.pixel_label)
        bar.addPermanentWidget(self.instance_label)
        bar.addPermanentWidget(self.zoom_label)
        bar.addPermanentWidget(self.device_label)

    def _action(self, text, slot, shortcut=None, icon_role=None, checkable=False) -> QAction:
        action = QAction(text, self)
        if icon_role:
            action.setIcon(icon(icon_role))
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        action.setCheckable(checkable)
        # a checkable action hands its new state on; ``triggered`` may arrive without it
        (action.toggled if checkable else action.triggered).connect(slot)
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        a = self.actions = {}
        file = bar.addMenu("&File")
        a["open_folder"] = self._action("Open &folder…", self._ask_folder, "Ctrl+O", "open_folder")
        a["open_file"] = self._action("Open &image…", self._ask_file, "Ctrl+Shift+O", "open_file")
        a["open_coco"] = self._action("Open &COCO dataset…", self._ask_coco, None, "open_coco")
        for k in ("open_folder", "open_file", "open_coco"):
            file.addAction(a[k])
        self.recent_menu = file.addMenu("Open &recent")
        file.addSeparator()
        a["screenshot"] = self._action("Save &screenshot…", self._ask_screenshot, None,
                                       "screenshot")
        file.addAction(a["screenshot"])
        file.addSeparator()
        a["quit"] = self._action("&Quit", self.close, "Ctrl+Q", "quit")
        file.addAction(a["quit"])

        edit = bar.addMenu("&Edit")
        undo = self.undo_stack.createUndoAction(self, "&Undo")
        undo.setShortcut(QKeySequence.StandardKey.Undo)
        undo.setIcon(icon("undo"))
        redo = self.undo_stack.createRedoAction(self, "&Redo")
        redo.setShortcut(QKeySequence.StandardKey.Redo)
        redo.setIcon(icon("redo"))
        edit.addAction(undo)
        edit.addAction(redo)
        edit.addSeparator()
        a["reviewed"] = self._action("Mark &reviewed", self.toggle_reviewed, "Ctrl+R", "reviewed")
        edit.addAction(a["reviewed"])
        self.edit_menu = edit

        view = bar.addMenu("&View")
        a["fit"] = self._action("&Fit to window", self.canvas.fit_to_window, "F", "fit")
        a["one"] = self._action("&Actual size (1:1)", self.canvas.zoom_1to1, "1", "one_to_one")
        a["zoom_in"] = self._action("Zoom &in", lambda: self.canvas.zoom_by(1.25),
                                    QKeySequence.StandardKey.ZoomIn, "zoom_in")
        a["zoom_out"] = self._action("Zoom &out", lambda: self.canvas.zoom_by(0.8),
                                     QKeySequence.StandardKey.ZoomOut, "zoom_out")
        a["next"] = self._action("&Next image", lambda: self.step(1), "PgDown", "next")
        a["previous"] = self._action("&Previous image", lambda: self.step(-1), "PgUp", "previous")
        a["overlay"] = self._action("Show &overlay", self.display_panel.show_overlay.setChecked,
                                    "O", checkable=True)
        a["overlay"].setChecked(True)
        self.display_panel.show_overlay.toggled.connect(a["overlay"].setChecked)
        for k in ("fit", "one", "zoom_in", "zoom_out", None, "next", "previous", None, "overlay"):
            view.addSeparator() if k is None else view.addAction(a[k])
        view.addSeparator()
        for dock in self.docks.values():
            view.addAction(dock.toggleViewAction())

        model = bar.addMenu("&Model")
        a["set_cascade"] = self._action("Set &Cascade model…", lambda: self._ask_model("cascade"),
                                        None, "model")
        a["set_pointrend"] = self._action("Set &PointRend model…",
                                          lambda: self._ask_model("pointrend"), None, "model")
        a["run"] = self._action("&Run on current image", self.run_current, "Ctrl+Return", "run")
        a["run_all"] = self._action("Run on &all images", self.run_all, "Ctrl+Shift+Return",
                                    "run_all")
        a["cancel"] = self._action("&Cancel", self.cancel, "Escape", "cancel")
        a["cancel"].setEnabled(False)  # while a model run is on (and Esc is free otherwise)
        for k in ("set_cascade", "set_pointrend", None, "run", "run_all", "cancel"):
            model.addSeparator() if k is None else model.addAction(a[k])

        self.train_menu = bar.addMenu("&Train")
        a["train"] = self._action("&Fine-tune on reviewed images…", self._train, None, "train")
        self.train_menu.addAction(a["train"])

        help_menu = bar.addMenu("&Help")
        a["shortcuts"] = self._action("&Keyboard shortcuts", self._shortcuts, "F1")
        a["about"] = self._action("&About cellseg-gui", self._about, None, "help")
        help_menu.addAction(a["shortcuts"])
        help_menu.addAction(a["about"])
        self._rebuild_recent()

    def _connect(self) -> None:
        s = self.service
        s.raw_ready.connect(self._raw_ready)
        s.error.connect(self._model_error)
        s.model_loaded.connect(self._model_loaded)
        s.batch_progress.connect(lambda d, t: self.models_panel.set_batch(d, t, True))
        s.batch_finished.connect(self._batch_finished)
        s.run_progress.connect(self._run_progress)
        s.run_cancelled.connect(self._run_cancelled)
        s.models.started.connect(self._run_started)
        s.models.idle.connect(self._update_run_state)

        self.image_list.current_changed.connect(self.select_image)
        m = self.models_panel
        m.model_changed.connect(self.set_model)
        m.device_changed.connect(self.set_device)
        m.precision_changed.connect(self.set_precision)
        m.tiling_changed.connect(self.set_tiling)
        m.run_requested.connect(self.run_current)
        m.run_all_requested.connect(self.run_all)
        m.cancel_requested.connect(self.cancel)
        self.post_panel.changed.connect(self.refresh)
        self.post_panel.run_options_changed.connect(self.refresh)

        d = self.display_panel
        d.contrast_changed.connect(self.canvas.set_contrast)
        d.style_changed.connect(lambda changes: self.canvas.set_overlay_style(**changes))
        d.annotations_changed.connect(lambda opts: self.canvas.set_annotations(**opts))
        self.legend.hidden_classes_changed.connect(
            lambda hidden: self.canvas.set_overlay_style(hidden_classes=hidden))
        self.canvas.cursor_moved.connect(self._cursor_moved)
        self.canvas.cursor_left.connect(lambda: (self.pixel_label.setText(""),
                                                 self.instance_label.setText("")))
        self.canvas.zoom_changed.connect(lambda z: self.zoom_label.setText(f"{z * 100:.0f}%"))

    def _restore(self) -> None:
        geometry = self.settings.geometry()
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(1400, 900)
        state = self.settings.window_state()
        if state is not None:
            self.restoreState(state)
        self.models_panel.set_device(self.settings.device())
        self.service.set_precision(self.settings.precision())
        self.models_panel.set_precision(self.settings.precision())
        self.service.set_tiling(self.settings.tiling())
        self.models_panel.set_tiling(self.settings.tiling())
        for key in MODEL_KEYS:
            config, weights = self.settings.model_paths(key)
            if config and weights:
                self.models_panel.set_model_paths(key, config, weights, emit=False)
                self.service.set_model(key, config, weights)

    # ================================================================== opening
    def open_path(self, path: str | Path) -> bool:
        """Open a folder, image file, COCO .json or research folder; False (and a message) on
        error."""
        if Path(path).suffix.lower() == ".cellseg" and hasattr(self, "editing"):
            return self.editing.open_project(path)  # a project: its images, edits and models
        if hasattr(self, "editing") and not self.editing.may_leave(
                f"Opening {Path(path).name}", path):
            return False  # the user kept the unsaved edits (or the project)
        try:
            source = open_source(path)
        except CellsegError as exc:
            self.show_error(str(exc))
            return False
        self.source = source
        self.index = -1
        self._composed.clear()
        self._edited.clear()
        self._reviewed.clear()
        self._images.clear()
        self.undo_stack.clear()
        self.service.cancel()
        if source.class_names:
            self._set_class_names(source.class_names)
        self.image_list.set_entries([e.name for e in source.entries])
        self.settings.add_recent(path)
        self._rebuild_recent()
        self.setWindowTitle(f"cellseg-gui — {Path(path).name}")
        self.image_list.set_current(0)
        return True

    def step(self, delta: int) -> None:
        if self.source and self.source.entries:
            self.image_list.set_current(min(max(self.index + delta, 0),
                                            len(self.source.entries) - 1))

    def select_image(self, index: int) -> None:
        if self.source is None or not 0 <= index < len(self.source.entries):
            return
        if index == self.index and self.image is not None:
            return
        self.index = index
        self._cancelled_keys.clear()  # another image: its runs start as usual
        self.undo_stack.clear()  # edits of another image cannot be undone from here
        path = str(self.source.entries[index].path)
        cached = self._images.get(path)
        if cached is not None:
            self._image_loaded(index, cached)
            return
        from cellseg.core.io import read_image

        self.service.submit_light(lambda: read_image(path),
                                  lambda image: self._image_loaded(index, image),
                                  lambda msg: self._image_failed(index, msg), tag="load")

    def _image_loaded(self, index: int, image: np.ndarray) -> None:
        path = str(self.source.entries[index].path)
        self._images[path] = image
        self._images.move_to_end(path)
        while len(self._images) > IMAGE_CACHE:
            self._images.popitem(last=False)
        if index != self.index:
            return
        self.image = image
        self._shown = None
        self._wanted = None
        self.result_label.setText("")
        self.banner.hide()  # an earlier image's error; this image's own errors show again
        self.canvas.set_image(image)
        self.display_panel.set_contrast(self.canvas.contrast)
        self.image_shown.emit(index)
        self.refresh()

    def _image_failed(self, index: int, message: str) -> None:
        self.image_list.set_status(index, "error", tooltip=message)
        if index == self.index:
            self.image = None
            self.canvas.set_image(None)
            self._show(None)
        self.show_error(message)

    # ================================================================== models
    def set_model(self, key: str, config: str, weights: str) -> None:
        self.models_panel.set_model_paths(key, config, weights, emit=False)
        self.service.set_model(key, config, weights)
        self.service.clear_failures()
        self.banner.hide()  # the previous pair's error; this pair's own errors show again
        self.settings.set_model_paths(key, config, weights)
        self.refresh()

    def set_device(self, device: str) -> None:
        self.service.set_device(device)
        self.service.clear_failures()
        self.settings.set_device(device)
        self.device_label.setText(f"device: {device}")
        self.refresh()

    def set_precision(self, precision: str) -> None:
        """exact/fast: part of the raw-output cache key, so switching re-runs (or re-uses)."""
        self.service.set_precision(precision)
        self.service.clear_failures()
        self.settings.set_precision(precision)
        self.refresh()

    def set_tiling(self, tiling) -> None:
        """Tiles for large images (or None): part of the raw-output cache key, like precision."""
        self.service.set_tiling(tiling)
        self.service.clear_failures()
        self.settings.set_tiling(tiling)
        self.refresh()

    def run_current(self) -> None:
        """Run (or re-try after an error or a cancel) the chosen models on the current image."""
        self._cancelled_keys.clear()
        self.service.clear_failures()
        self.banner.hide()
        self.refresh(force=True)

    def run_all(self) -> None:
        if self.source is None:
            return
        self._cancelled_keys.clear()
        self.service.clear_failures()
        keys = [self.service.key_for(e.path, m, self.post_panel.tta.isChecked())
                for e in self.source.entries for m in self.post_panel.models()
                if self.service.has_model(m)]
        if not keys:
            self.show_error("set the models first (Models panel)")
            return
        if self.service.run_all(keys):
            self.models_panel.set_batch(0, len(keys), True)

    def cancel(self) -> None:
        """Stop the model runs: the running one at its next stage or TTA pass, the rest
        (prefetch, batch) before they start. What is on the canvas stays."""
        if self.source is not None and 0 <= self.index < len(self.source.entries):
            keys = self._keys(self.index)
            keys += [replace(k, tta=False) for k in keys if k.tta]
            self._cancelled_keys |= {k for k in keys if self.service.queued(k)}
        self.service.cancel()
        self._update_run_state()

    def _batch_finished(self, cancelled: bool) -> None:
        self.models_panel.set_batch(0, 0, False)
        self.statusBar().showMessage("run cancelled" if cancelled else "all images done", 5000)

    def _update_run_state(self) -> None:
        """Cancel (Esc, Model menu, Models panel) while a model run is on; the progress while
        one runs."""
        busy = self.service.busy
        self.actions["cancel"].setEnabled(busy)
        self.models_panel.set_cancellable(busy)
        running = self.service.models.running_tag is not None
        self.run_label.setVisible(running)
        self.run_progress.setVisible(running)

    def _run_name(self, key: RawKey) -> str:
        name = key.model + (" +TTA" if key.tta else "")
        return name if key.image == self._current_path() else f"{Path(key.image).name} {name}"

    def _run_started(self, key: RawKey) -> None:
        self._tta_step = self._tile_step = ""
        self.run_progress.setRange(0, 0)  # busy until the first TTA pass says how many
        self.run_label.setText(f"{self._run_name(key)}: starting")
        self._update_run_state()

    def _run_progress(self, key: RawKey, stage: str, done: int, total: int) -> None:
        if key != self.service.models.running_tag:
            return  # a late report of a job that ended
        if stage == TILE:  # the bar counts tiles; TTA passes and stages go in the text
            self.run_progress.setRange(0, total)
            self.run_progress.setValue(done)
            self._tile_step = text = f"tile {min(done + 1, total)}/{total}"
        elif stage == TTA_PASS:
            if not self._tile_step:
                self.run_progress.setRange(0, total)
                self.run_progress.setValue(done)
            self._tta_step = text = f"TTA pass {min(done + 1, total)}/{total}"
        else:
            text = stage if total == 1 else f"{stage} {done}/{total}"
            if self._tta_step:
                text = f"{self._tta_step}, {text}"
        if self._tile_step and stage != TILE:
            text = f"{self._tile_step}, {text}"
        self.run_label.setText(f"{self._run_name(key)}: {text}")

    def _run_cancelled(self, key: RawKey) -> None:
        """A run stopped by Cancel: nothing cached, no error; the canvas keeps what it shows
        (e.g. the plain prediction while TTA ran)."""
        i = self.index
        if self.service.queued(key) or key.image != self._current_path():
            return  # run again meanwhile, or another image's (the batch says it was cancelled)
        self._cancelled_keys.add(key)
        if self._wanted_label == PLAIN_WHILE_TTA:
            self._wanted_label = PLAIN_TTA_CANCELLED
        if self.result_label.text() == PLAIN_WHILE_TTA:
            self.result_label.setText(PLAIN_TTA_CANCELLED)
        if i not in self._edited and i not in self._reviewed:
            if self._shown is not None:
                self.image_list.set_status(i, "predicted", len(self._shown))
            else:
                self.image_list.set_status(i, "not run")
        self.statusBar().showMessage(RUN_CANCELLED, 10000)

    def _model_loaded(self, info: ModelInfo) -> None:
        self.models_panel.set_running_device(info.device)
        self.device_label.setText(f"device: {info.device}")
        if info.precision_note and "running exact" in info.precision_note:
            self.statusBar().showMessage(info.precision_note, 10000)  # fast fell back
        if info.max_detections:
            self.post_panel.set_model_cap(info.max_detections)
        project = getattr(getattr(self, "editing", None), "store", None)
        if info.class_names and not (self.source and self.source.class_names) and project is None:
            self._set_class_names(list(info.class_names))

    def _set_class_names(self, names: list[str]) -> None:
        self.class_names = list(names)
        self.canvas.set_class_names(self.class_names)
        self.legend.set_classes(self.class_names)
        if self._shown is not None:
            self.legend.set_counts(self._shown.classes)

    def _model_error(self, message: str, key: RawKey | None) -> None:
        current = self._current_path()
        if key is not None and self.source is not None:
            for i, e in enumerate(self.source.entries):
                if str(e.path) == key.image:
                    self.image_list.set_status(i, "error", tooltip=message)
        if key is None or key.image == current:
            self.show_error(message)
        else:  # a prefetch or batch job for another image: the list shows it, no banner
            self.statusBar().showMessage(f"{Path(key.image).name}: {message}", 10000)

    def _current_path(self) -> str | None:
        if self.source is None or not 0 <= self.index < len(self.source.entries):
            return None
        return str(self.source.entries[self.index].path)

    # ================================================================== results
    def _keys(self, index: int) -> list[RawKey]:
        path = self.source.entries[index].path
        tta = self.post_panel.tta.isChecked()
        return [self.service.key_for(path, m, tta) for m in self.post_panel.models()]

    def compose_key(self, index: int, keys: list[RawKey] | None = None):
        keys = self._keys(index) if keys is None else keys
        return tuple(keys), self.post_panel.settings().pipeline()

    def refresh(self, force: bool = False) -> None:
        """Bring the canvas up to date with the current settings: show the composed result,
        compose it from cached raw outputs, or queue the model runs it needs."""
        if self.source is None or self.index < 0 or self.image is None:
            return
        i = self.index
        if i in self._edited:
            self.result_label.setText("")
            self._show(self._edited[i])
            return
        missing = [m for m in self.post_panel.models() if not self.service.has_model(m)]
        if missing:
            self._wanted = None
            self._show(None)
            hint = "set the " + " and ".join(missing) + " model (Model menu or Models panel)"
            if len(missing) < len(self.post_panel.models()):  # an ensemble with one model
                self.show_error("Ensemble fuses the Cascade and PointRend models' predictions: "
                                f"{hint}, or choose the model you have under Post-processing > "
                                "Model. No cells are shown meanwhile.")
            self.statusBar().showMessage(hint)
            return
        keys = self._keys(i)
        failures = [self.service.failure(k) for k in keys if self.service.failure(k)]
        if failures and not force:
            self._show(None)
            self.show_error(failures[0])  # Run (or new model paths) retries
            return
        raws = {k.model: self.service.cached(k) for k in keys}
        if any(v is None for v in raws.values()):
            self._run_missing(i, keys, raws)
            return
        mismatch = self._class_sets_differ([k.model for k in keys])
        if mismatch:
            self._wanted = None
            self._show(None)
            self.show_error(mismatch)
            return
        self._compose(i, raws, show=True, label=TTA_SHOWN if keys[0].tta else "")
        self._prefetch(i + 1)

    def _class_sets_differ(self, models: list[str]) -> str:
        """A message when an ensemble's models predict different class sets (Weighted Boxes
        Fusion would fuse class k of one model with class k of the other), else ""."""
        infos = [self.service.info.get(m) for m in models]
        if len(models) < 2 or any(info is None for info in infos):
            return ""
        names = [tuple(info.class_names) for info in infos]
        if len(set(names)) == 1:
            return ""
        listed = "; ".join(f"{m}: {len(n)} ({', '.join(n[:6])}{', …' if len(n) > 6 else ''})"
                           for m, n in zip(models, names))
        return ("Ensemble needs models that predict the same classes, but they differ — "
                f"{listed}. Choose one model under Post-processing > Model, or set models "
                "trained on the same classes.")

    def _run_missing(self, i: int, keys: list[RawKey], raws: dict) -> None:
        """Queue the model runs the current image lacks. With TTA, the plain run goes first
        and its result is shown until TTA (10-20x longer) replaces it."""
        plain = [replace(k, tta=False) for k in keys if k.tta]
        plain_raws = {k.model: self.service.cached(k) for k in plain}
        stopped = self._cancelled_keys

        def request_plain():
            for k in plain:
                if (plain_raws[k.model] is None and self.service.failure(k) is None
                        and k not in stopped):
                    self.service.request(k, front=True)

        request_plain()  # starts at once when the model thread is idle ...
        for k in keys:
            if raws[k.model] is None and k not in stopped:
                self.service.request(k, front=True)
        request_plain()  # ... and otherwise is moved ahead of the TTA runs
        cancelled = any(raws[k.model] is None and k in stopped for k in keys)
        if not cancelled:
            self.image_list.set_status(i, "running")
        if plain and all(v is not None for v in plain_raws.values()):
            label = PLAIN_TTA_CANCELLED if cancelled else PLAIN_WHILE_TTA
            self._compose(i, plain_raws, show=True, keys=plain, label=label)
            self.statusBar().showMessage(RUN_CANCELLED if cancelled else PLAIN_WHILE_TTA)
            return
        if cancelled:
            self.statusBar().showMessage(RUN_CANCELLED)
            return
        self.statusBar().showMessage("running " + ", ".join(
            k.model + (" +TTA" if k.tta else "") for k in keys if raws[k.model] is None))

    def _compose(self, index: int, raws: dict, show: bool, keys: list[RawKey] | None = None,
                 label: str = "") -> None:
        ckey = self.compose_key(index, keys)
        if show:
            self._wanted, self._wanted_label = ckey, label
        done = self._composed.get(index)
        if done is not None and done[0] == ckey:
            if show:
                self.result_label.setText(label)
                self._show(done[1])
            return
        settings = self.post_panel.settings().pipeline()
        self.service.submit_light(
            lambda: compose_raw(raws, settings),
            lambda result: self._composed_done(index, ckey, *result),
            lambda msg: self.show_error(f"post-processing failed: {msg}"),
            tag=("compose", index))

    def _composed_done(self, index: int, ckey, instances: Instances, prepared=None) -> None:
        self._composed[index] = (ckey, instances)
        if prepared is not None:
            self._prepared = (instances, prepared)
        if index not in self._edited and index not in self._reviewed:
            self.image_list.set_status(index, "predicted", len(instances))
        if index == self.index and ckey == self._wanted and index not in self._edited:
            self.result_label.setText(self._wanted_label)  # before: listeners read it
            self._show(instances)

    def _raw_ready(self, key: RawKey) -> None:
        if self.source is None:
            return
        for i, entry in enumerate(self.source.entries):
            if str(entry.path) != key.image:
                continue
            if i == self.index:
                self.refresh()
            elif i not in self._edited:  # batch or prefetch: compose for the list's count
                keys = self._keys(i)
                raws = {k.model: self.service.cached(k) for k in keys}
                if all(v is not None for v in raws.values()):
                    self._compose(i, raws, show=False)

    def _prefetch(self, index: int) -> None:
        if self.source is None or not 0 <= index < len(self.source.entries):
            return
        for k in self._keys(index):
            if self.service.cached(k) is None and self.service.failure(k) is None:
                self.service.request(k, front=False)

    def _show(self, instances: Instances | None) -> None:
        self._shown = instances
        prepared = None
        if self._prepared is not None and self._prepared[0] is instances:
            # used once: tools may paint into the overlay's label image afterwards
            prepared, self._prepared = self._prepared[1], None
        self.canvas.set_instances(instances, prepared=prepared)
        # nothing shown counts nothing (the legend kept the previous result's counts)
        self.legend.set_counts(instances.classes if instances is not None else np.zeros(0))
        if instances is not None:
            self.statusBar().showMessage(f"{len(instances)} instances", 3000)
        self.instances_changed.emit(instances)

    # ================================================================== editing hooks
    def current_instances(self) -> Instances | None:
        """The instances shown for the current image (edited if edited, else predicted)."""
        return self._shown

    def set_current_instances(self, instances: Instances, edited: bool = True) -> None:
        """Replace the current image's instances (editing commands call this)."""
        if edited and self.index >= 0:
            self._edited[self.index] = instances
            if self.index not in self._reviewed:
                self.image_list.set_status(self.index, "edited", len(instances))
        self._show(instances)

    def is_reviewed(self, index: int) -> bool:
        """Whether image ``index`` is marked reviewed in the window's per-image memory."""
        return index in self._reviewed

    def is_edited(self, index: int) -> bool:
        """Whether image ``index`` shows edited instances (kept per image until saved)."""
        return index in self._edited

    def set_reviewed_mark(self, index: int, reviewed: bool) -> None:
        """Record what the project says of image ``index`` (no list or undo change)."""
        (self._reviewed.add if reviewed else self._reviewed.discard)(index)

    def unsaved_memory(self) -> dict[int, tuple[Instances | None, bool]]:
        """``{index: (edited Instances or None, reviewed)}`` of images edited or marked
        reviewed without a project."""
        return {i: (self._edited.get(i), i in self._reviewed)
                for i in set(self._edited) | self._reviewed}

    def forget_unsaved(self) -> None:
        """Drop the per-image edits and review marks (the user chose Discard)."""
        self._edited.clear()
        self._reviewed.clear()

    def toggle_reviewed(self) -> None:
        i = self.index
        if i < 0:
            return
        if i in self._reviewed:
            self._reviewed.discard(i)
            status = "edited" if i in self._edited else (
                "predicted" if i in self._composed else "not run")
        else:
            self._reviewed.add(i)
            status = "reviewed"
        count = len(self._shown) if self._shown is not None else None
        self.image_list.set_status(i, status, count)

    # ================================================================== messages, status
    def show_error(self, message: str) -> None:
        self.last_error = message
        self.banner.show_message(message)
        self.statusBar().showMessage(message, 10000)
        self.error_shown.emit(message)

    def _cursor_moved(self, x: int, y: int, value: str, index: int) -> None:
        self.pixel_label.setText(f"x {x}  y {y}  value {value}")
        inst = self.canvas.instances
        if index < 0 or inst is None or index >= len(inst):
            self.instance_label.setText("")
            return
        c = int(inst.classes[index])
        name = self.class_names[c] if c < len(self.class_names) else f"class {c}"
        # the hovered instance's own crop: areas() of all would sum every mask per mouse move
        area = int(np.count_nonzero(inst.masks.crop(index))) if inst.masks is not None else 0
        ident = self.instance_id(index)
        self.instance_label.setText(f"#{ident} {name}  score {inst.scores[index]:.2f}  "
                                    f"area {area} px")

    def instance_id(self, index: int) -> int:
        """The id the user sees for canvas instance ``index`` (History and hover agree: with
        the editing tools it is the instance's uid)."""
        editing = getattr(self, "editing", None)
        return editing.uid_at_position(index) if editing is not None else index

    # ================================================================== dialogs
    def _ask_folder(self) -> None:
        path = file_dialogs.get_existing_directory(self, "Open folder of images")
        if path:
            self.open_path(path)

    def _ask_file(self) -> None:
        path, _ = file_dialogs.get_open_file_name(self, "Open image", "",
                                              "Images (*.tif *.tiff *.png *.jpg *.jpeg *.bmp)")
        if path:
            self.open_path(path)

    def _ask_coco(self) -> None:
        path, _ = file_dialogs.get_open_file_name(self, "Open COCO dataset", "", "COCO (*.json)")
        if path:
            self.open_path(path)

    def _ask_model(self, key: str) -> None:
        config, _ = file_dialogs.get_open_file_name(self, f"{key}: Detectron2 config", "",
                                                "Config (*.yaml *.yml)")
        if not config:
            return
        weights, _ = file_dialogs.get_open_file_name(self, f"{key}: checkpoint", str(Path(config).parent),
                                                 "Checkpoint (*.pth *.pkl)")
        if weights:
            self.set_model(key, config, weights)

    def _ask_screenshot(self) -> None:
        path, _ = file_dialogs.get_save_file_name(self, "Save screenshot", "cellseg.png", "PNG (*.png)")
        if path:
            self.grab().save(path)

    def _rebuild_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.settings.recent():
            self.recent_menu.addAction(path, lambda p=path: self.open_path(p))
        self.recent_menu.setEnabled(bool(self.settings.recent()))

    def _train(self) -> None:
        QMessageBox.information(self, "Fine-tune", "Fine-tuning is started from the training "
                                "dialog (cellseg train on the command line meanwhile).")

    def _shortcuts(self) -> None:
        from .help import ShortcutsDialog

        self.shortcuts_dialog = ShortcutsDialog(self)
        self.shortcuts_dialog.show()

    def _about(self) -> None:
        from .help import app_version

        QMessageBox.about(self, "About cellseg-gui",
                          f"cellseg-gui {app_version()}: review and correct instance "
                          "segmentations of microscopy images with Detectron2-compatible Cascade "
                          "Mask R-CNN and PointRend models.\n\nHelp > Keyboard shortcuts (F1) "
                          "lists every key.")

    # ================================================================== shutdown
    def closeEvent(self, event) -> None:
        if hasattr(self, "editing") and not self.editing.may_leave("Quitting"):
            event.ignore()  # edits without a project: the user chose Cancel
            return
        self.settings.set_geometry(self.saveGeometry(), self.saveState())
        self.settings.sync()
        self.service.shutdown()
        super().closeEvent(event)
