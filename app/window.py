"""The review window: image list | canvas | side panels, menus and status bar.

It shows one image at a time (the last few decoded are kept); :class:`ResultsController` runs
the models in :class:`InferenceService`'s threads and composes off the GUI thread. Per image it
keeps edits made without a project (with one, each edit is saved) and the reviewed mark.

Its features (editing tools, Project menu, import/export, Train > Fine-tune, the first-run
guidance) and every action, menu and key are built once in its constructor by
``app.assembly.build_features`` from the ``app.actions`` tables.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
from PySide6.QtCore import Signal
from PySide6.QtGui import QUndoStack
from PySide6.QtWidgets import QMainWindow, QVBoxLayout, QWidget

from cellseg.core.errors import CellsegError
from cellseg.core.review.sources import ImageSource, open_source
from cellseg.core.structures import Instances

from .assembly import build_features
from .canvas import ImageCanvas
from .panels import DisplayPanel, ImageListPanel, LegendPanel, ModelsPanel, PostprocessPanel
from .panels.docks import make_docks
from .results import ResultsController
from .settings import MODEL_KEYS, AppSettings
from .status_bar import ErrorBanner, StatusBarView
from .window_dialogs import fill_recent, show_shortcuts
from .workers import InferenceService, ModelInfo

IMAGE_CACHE = 4  # decoded images kept for quick back-and-forth stepping


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
        self._edited: dict[int, Instances] = {}
        self._reviewed: set[int] = set()
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()
        self.results = ResultsController(self)
        self._build_widgets()
        f = build_features(self)
        self.editing, self.training, self.first_run = f.editing, f.training, f.first_run
        self.registry, self.menus, self.toolbar = f.registry, f.menus, f.toolbar
        self.review_panel, self.history, self.draw_as = f.review_panel, f.history, f.draw_as
        self.docks.update(f.docks)
        self.recent_menu = f.menus["recent"]
        self.shortcuts_dialog = None
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

        self.docks = make_docks(self, self.image_list, {"Models": self.models_panel,
                                "Post-processing": self.post_panel,
                                "Display": self.display_panel}, self.legend)

        self.status = StatusBarView(self.statusBar(), self.service, self.current_path)
        st = self.status
        self.pixel_label, self.instance_label, self.zoom_label = (
            st.pixel_label, st.instance_label, st.zoom_label)
        self.device_label, self.result_label = st.device_label, st.result_label
        self.run_label, self.run_progress = st.run_label, st.run_progress

    def _connect(self) -> None:
        s = self.service
        s.model_loaded.connect(self._model_loaded)
        s.batch_progress.connect(lambda d, t: self.models_panel.set_batch(d, t, True))
        s.batch_finished.connect(self._batch_finished)
        s.models.started.connect(self._update_run_state)
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
        self.canvas.cursor_left.connect(self.status.clear_cursor)
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
        if Path(path).suffix.lower() == ".cellseg":
            return self.editing.open_project(path)  # a project: its images, edits and models
        if not self.editing.may_leave(f"Opening {Path(path).name}", path):
            return False  # the user kept the unsaved edits (or the project)
        try:
            source = open_source(path)
        except CellsegError as exc:
            self.show_error(str(exc))
            return False
        self.source = source
        self.index = -1
        self.results.clear()
        self._edited.clear()
        self._reviewed.clear()
        self._images.clear()
        self.undo_stack.clear()
        self.service.cancel()
        if source.class_names:
            self.set_class_names(source.class_names)
        self.image_list.set_entries([e.name for e in source.entries])
        self.settings.add_recent(path)
        fill_recent(self.recent_menu, self)
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
        self.results.cancelled_keys.clear()  # another image: its runs start as usual
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
        self.results.wanted = None
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
            self.show_instances(None)
        self.show_error(message)

    def current_path(self) -> str | None:
        if self.source is None or not 0 <= self.index < len(self.source.entries):
            return None
        return str(self.source.entries[self.index].path)

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
        self._run_option(self.service.set_precision, self.settings.set_precision, precision)

    def set_tiling(self, tiling) -> None:
        """Tiles for large images (or None): part of the raw-output cache key, like precision."""
        self._run_option(self.service.set_tiling, self.settings.set_tiling, tiling)

    def _run_option(self, apply, remember, value) -> None:
        apply(value)
        self.service.clear_failures()
        remember(value)
        self.refresh()

    def refresh(self, force: bool = False) -> None:
        """Bring the canvas up to date with the current settings (:class:`ResultsController`)."""
        self.results.refresh(force)

    def run_current(self) -> None:
        self.results.run_current()

    def run_all(self) -> None:
        self.results.run_all()

    def cancel(self) -> None:
        self.results.cancel()
        self._update_run_state()

    def _batch_finished(self, cancelled: bool) -> None:
        self.models_panel.set_batch(0, 0, False)
        self.statusBar().showMessage("run cancelled" if cancelled else "all images done", 5000)

    def _update_run_state(self, *_) -> None:
        """Cancel (Esc, Model menu, Models panel) while a model run is on; the progress while
        one runs."""
        busy = self.service.busy
        self.registry["cancel"].setEnabled(busy)
        self.models_panel.set_cancellable(busy)
        self.status.update_run_state()

    def _model_loaded(self, info: ModelInfo) -> None:
        self.models_panel.set_running_device(info.device)
        if info.max_detections:
            self.post_panel.set_model_cap(info.max_detections)
        project = self.editing.store
        if info.class_names and not (self.source and self.source.class_names) and project is None:
            self.set_class_names(list(info.class_names))

    def set_class_names(self, names: list[str]) -> None:
        """The class names the canvas, legend and menus show (the model's, the dataset's or
        the project's)."""
        self.class_names = list(names)
        self.canvas.set_class_names(self.class_names)
        self.legend.set_classes(self.class_names)
        if self._shown is not None:
            self.legend.set_counts(self._shown.classes)

    # ================================================================== shown instances
    def show_instances(self, instances: Instances | None) -> None:
        """Put ``instances`` on the canvas (with the overlay labels composed with them)."""
        self._shown = instances
        self.canvas.set_instances(instances, prepared=self.results.take_prepared(instances))
        # nothing shown counts nothing (the legend kept the previous result's counts)
        self.legend.set_counts(instances.classes if instances is not None else np.zeros(0))
        if instances is not None:
            self.statusBar().showMessage(f"{len(instances)} instances", 3000)
        self.instances_changed.emit(instances)

    def current_instances(self) -> Instances | None:
        """The instances shown for the current image (edited if edited, else predicted)."""
        return self._shown

    def set_current_instances(self, instances: Instances, edited: bool = True) -> None:
        """Replace the current image's instances (editing commands call this)."""
        if edited and self.index >= 0:
            self._edited[self.index] = instances
            if self.index not in self._reviewed:
                self.image_list.set_status(self.index, "edited", len(instances))
        self.show_instances(instances)

    def edited_instances(self, index: int) -> Instances | None:
        return self._edited.get(index)

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
                "predicted" if i in self.results.composed else "not run")
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
        inst = self.canvas.instances
        text = ""
        if 0 <= index and inst is not None and index < len(inst):
            c = int(inst.classes[index])
            name = self.class_names[c] if c < len(self.class_names) else f"class {c}"
            # the hovered instance's own crop: areas() of all would sum every mask per mouse move
            area = int(np.count_nonzero(inst.masks.crop(index))) if inst.masks is not None else 0
            # the id History names: the instance's uid
            text = (f"#{self.editing.uid_at_position(index)} {name}  "
                    f"score {inst.scores[index]:.2f}  area {area} px")
        self.status.show_cursor(x, y, value, text)

    def show_shortcuts(self) -> None:
        self.shortcuts_dialog = show_shortcuts(self)

    # ================================================================== shutdown
    def closeEvent(self, event) -> None:
        if not self.editing.may_leave("Quitting"):
            event.ignore()  # edits without a project: the user chose Cancel
            return
        self.settings.set_geometry(self.saveGeometry(), self.saveState())
        self.settings.sync()
        self.service.shutdown()
        super().closeEvent(event)
