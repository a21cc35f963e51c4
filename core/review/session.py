"""A review session: everything one review of an image list is, with no Qt in it.

It owns the current index, each image's :class:`ImageState`, the raw model outputs (cached
under :class:`RawKey`), the :class:`ReviewSettings`, the current image's editing model
(:class:`ImageAnnotations`) with its undo history, and the project store, and announces every
change through typed ``psygnal`` signals: views listen, tools and commands call operations.
The signals fire in the caller's thread (the session is not thread-safe): the app runs models
in its worker threads and hands outputs in with :meth:`set_raw` on the GUI thread; scripts and
tests call :meth:`predict`. With a project open, every finished edit, undo and redo is one
transaction; a write the project refuses (read-only, disk full, journal lost) is taken back in
the editing model too, so what the session holds is what is saved, and :attr:`error` says why.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from psygnal import Signal

from ..coco.dataset import CocoDataset
from ..errors import CellsegError
from ..postprocess.pipeline import Settings
from ..project import edits as E
from ..project.annotations import ImageAnnotations
from ..project.states import Edit, EditError, Review
from ..project.strokes import Stroke
from ..project.store import ProjectStore
from ..structures import Instances
from . import project as P
from .outputs import ModelOutputs, ModelSlot, Predictor
from .settings import ReviewSettings
from .sources import ImageSource, open_source
from .state import History, ImageInfo, ImageState, RawKey, ReviewImage


class ReviewSession:
    """Open images, predict, post-process, edit, undo, mark reviewed, save, export."""

    images_changed = Signal()  # a new image list (open_images, open_project)
    current_changed = Signal(int)  # index of the image now current
    state_changed = Signal(int, ImageState)  # an image's state in the list changed
    settings_changed = Signal(ReviewSettings)
    annotations_changed = Signal(int)  # the annotations of this (current) image changed
    history_changed = Signal()  # undo/redo availability or labels changed
    project_changed = Signal(object)  # the ProjectStore now open, or None
    error = Signal(str)  # a run failed, a write was refused, a file could not be opened

    def __init__(self, settings: ReviewSettings = ReviewSettings(), image_cache: int = 4,
                 raw_cache: int = 256) -> None:
        self.settings = settings
        self.source: ImageSource | None = None
        self.store: ProjectStore | None = None
        self.index = -1
        self.history = History()
        self.outputs = ModelOutputs(raw_cache, image_cache)
        self._images: list[ReviewImage] = []
        self._last_states: dict[int, ImageState] = {}  # as last announced, per index

    # ================================================================== reading
    def __len__(self) -> int:
        return len(self._images)

    def info(self, index: int) -> ImageInfo:
        return self._images[index].info()

    def state(self, index: int) -> ImageState:
        return self._images[index].state

    @property
    def annotations(self) -> ImageAnnotations | None:
        """The current image's editing model (None before a result or without an image)."""
        return self._images[self.index].ann if 0 <= self.index < len(self) else None

    can_undo = property(lambda self: self.history.can_undo)
    can_redo = property(lambda self: self.history.can_redo)

    def image(self, index: int | None = None) -> np.ndarray:
        """The decoded image (dtype kept); the last few are cached. Raises ImageReadError."""
        return self.outputs.image(self._images[self.index if index is None else index].entry.path)

    def raw_keys(self, index: int) -> list[RawKey]:
        """The raw outputs image ``index`` needs under the current settings."""
        return self.outputs.keys(self._images[index].entry.path, self.settings.models,
                                 self.settings.tta)

    def composed(self, index: int) -> Instances | None:
        """Image ``index``'s post-processed result under the current settings, if composed."""
        return self._images[index].result(self._compose_key(index))

    # ================================================================== images
    def open_images(self, source: ImageSource | str | Path) -> bool:
        """Show a folder, image file, COCO .json or research folder and select its first
        image. With a project open, images are matched to it by name. False on error."""
        if not isinstance(source, ImageSource):
            try:
                source = open_source(source)
            except CellsegError as exc:
                self.error.emit(str(exc))
                return False
        self.source = source
        self._images = [ReviewImage(e) for e in source.entries]
        self.index = -1
        self._last_states.clear()
        self.history.clear()
        if self.store is not None:
            P.attach(self.store, self._images)
        self.images_changed.emit()
        self.history_changed.emit()
        if self._images:
            self.select(0)
        return True

    def select(self, index: int) -> None:
        """Make image ``index`` current, with an empty undo history (as in the window)."""
        if not 0 <= index < len(self) or index == self.index:
            return
        self.index = index
        self.history.clear()
        self.current_changed.emit(index)
        self.history_changed.emit()
        self._load_current()

    # ================================================================== models and settings
    def set_predictor(self, model: str, predictor: Predictor | None, config: str | Path = "",
                      weights: str | Path = "", device: str = "", precision: str = "exact"
                      ) -> None:
        """Put a predictor in a model slot ("cascade", "pointrend"); ``config``, ``weights``,
        ``device`` and ``precision`` name its outputs in the raw-output keys."""
        self.outputs.slots[model] = ModelSlot(predictor, str(config), str(weights), device,
                                              precision)
        self._refresh_current()

    def set_settings(self, settings: ReviewSettings) -> None:
        """New model choice / TTA / post-processing: the current image re-composes from the
        cached raw outputs (a model choice or TTA without outputs waits for :meth:`predict`)."""
        if settings == self.settings:
            return
        self.settings = settings
        self.settings_changed.emit(settings)
        self._refresh_current()

    def update_settings(self, **changes) -> None:
        self.set_settings(self.settings.replace(**changes))

    # ================================================================== results
    def predict(self, index: int | None = None) -> Instances | None:
        """Run the models image ``index`` still lacks (synchronously) and compose its result.

        Args:
            index: an image of the list; None for the current one.

        Returns:
            The post-processed result; None (and the error event) when a run failed.
        """
        i = self.index if index is None else index
        rec = self._images[i]
        missing = self.outputs.missing(self.raw_keys(i))
        if missing:
            unset = self.outputs.unset(missing)
            if unset:
                self.set_failure(missing[0], f"no {unset[0]} model set: choose its config.yaml "
                                 "and checkpoint")
                return None
            rec.running = True
            self._emit_state(i)
            try:
                self.outputs.run(missing, self.image(i))
            except Exception as exc:  # a model run may fail in any way; the session lives on
                self.set_failure(missing[0], str(exc) if isinstance(exc, CellsegError)
                                 else f"{type(exc).__name__}: {exc}")
                return None
            rec.running, rec.message = False, ""
        self._refresh_current() if i == self.index else self._compose(i)
        self._emit_state(i)
        return self.composed(i)

    def set_raw(self, key: RawKey, instances: Instances) -> None:
        """Cache a raw output computed elsewhere (the app's model thread); its images re-compose."""
        self.outputs.keep(key, instances)
        for i in self._indices_of(key):
            self._images[i].running, self._images[i].message = False, ""
            self._refresh_current() if i == self.index else self._compose(i)
            self._emit_state(i)

    def set_failure(self, key: RawKey, message: str) -> None:
        """A run of ``key`` failed: its image shows the error state and :attr:`error` fires."""
        for i in self._indices_of(key):
            self._images[i].running, self._images[i].message = False, message
            self._emit_state(i)
        self.error.emit(f"{Path(key.image).name}: {message}")

    def _indices_of(self, key: RawKey) -> list[int]:
        return [i for i, rec in enumerate(self._images) if str(rec.entry.path) == key.image]

    # ================================================================== editing
    def apply(self, edit: Edit | None, already_applied: bool = False) -> bool:
        """Apply a finished edit to the current image, save it and put it on the undo history.

        Args:
            edit: made by a ``core.project.edits`` operation on :attr:`annotations`.
            already_applied: a live :class:`Stroke` already changed the annotations.

        Returns:
            False for a no-op, or when the project refused the write (then the edit is taken
            back and :attr:`error` says why).
        """
        rec = self._current()
        if edit is None or edit.is_noop() or rec is None or rec.ann is None:
            return False
        refused = self.store and P.save(self.store, rec, edit, applied=already_applied)
        if refused:
            if already_applied:  # taken back before anyone hears why
                rec.ann.undo(edit)
                self.annotations_changed.emit(self.index)
            self.error.emit(refused)
            return False
        if not already_applied:
            rec.ann.apply(edit)
        self.history.push(edit)
        self._edited(rec)
        return True

    def undo(self) -> bool:
        """Take the last edit back, saved like any edit. False if there is none or the project
        refused the write (the edit then stays applied and undoable)."""
        return self._swap(self.history.next_undo(), undo=True)

    def redo(self) -> bool:
        return self._swap(self.history.next_redo(), undo=False)

    def _swap(self, edit: Edit | None, undo: bool) -> bool:
        rec = self._current()
        if edit is None or rec is None or rec.ann is None:
            return False
        change = edit.inverse() if undo else edit
        refused = self.store and P.save(self.store, rec, change, applied=False)
        if refused:
            self.error.emit(refused)
            return False
        rec.ann.apply(change)
        self.history.undone() if undo else self.history.redone()
        self._edited(rec)
        return True

    def begin_stroke(self, uid: int | None, radius: float, erase: bool = False,
                     allow_overlap: bool = False, class_id: int = 0) -> Stroke:
        """A brush (or eraser) stroke on the current image: ``stroke.move_to(x, y)`` paints
        live into :attr:`annotations` (returning the rectangle to repaint; no events fire per
        dab); :meth:`finish_stroke` makes it one edit. ``uid`` None paints a new instance."""
        return Stroke(self._editable(), uid, radius, erase, allow_overlap, class_id)

    def finish_stroke(self, stroke: Stroke) -> bool:
        return self.apply(stroke.finish(), already_applied=True)

    def delete(self, uids: Iterable[int]) -> bool:
        return self.apply(E.delete(self._editable(), uids))

    def set_class(self, uids: Iterable[int], class_id: int) -> bool:
        return self.apply(E.set_class(self._editable(), uids, class_id))

    def set_review(self, uids: Iterable[int], review: Review) -> bool:
        return self.apply(E.set_review(self._editable(), uids, review))

    def mark_reviewed(self, reviewed: bool | None = None) -> bool:
        """Mark the current image reviewed (None: toggle); an undoable, saved edit."""
        ann = self._editable()
        return self.apply(E.set_image_reviewed(ann, (not ann.reviewed) if reviewed is None
                                               else bool(reviewed)))

    def _editable(self) -> ImageAnnotations:
        rec = self._current()
        if rec is None:
            raise EditError("no image to edit")
        if rec.ann is None:  # nothing predicted yet: an empty image can be drawn on or marked
            rec.ann = ImageAnnotations.empty(self.image().shape[:2], self._uid_source())
        return rec.ann

    def _edited(self, rec: ReviewImage) -> None:
        rec.touched = True
        if self.store is not None and rec.image_id is not None:
            P.refresh(self.store, rec)
        self.annotations_changed.emit(self.index)
        self.history_changed.emit()
        self._emit_state(self.index)

    # ================================================================== project
    def new_project(self, path: str | Path, images_dir: str | Path | None = None,
                    models: Iterable[tuple[str | Path, str | Path]] = ()) -> bool:
        """Create a project for ``images_dir`` (default: the open folder) and open it. Edits
        made without a project go into it. False (and the error event) on failure."""
        if images_dir is None:
            if self.source is None:
                self.error.emit("open a folder of images first")
                return False
            images_dir = self.source.root
        unsaved = ([(Path(r.entry.path), r.ann) for r in self._images
                    if r.touched and r.ann is not None] if self.store is None else [])
        try:
            P.create(path, images_dir, models, unsaved)
        except CellsegError as exc:
            self.error.emit(str(exc))
            return False
        return self.open_project(path)

    def open_project(self, path: str | Path) -> bool:
        """Open a project (taking its lock) and show its images with their stored
        annotations. False (and the error event) when it cannot be opened."""
        try:
            store, source = P.open_project(path)
        except CellsegError as exc:
            self.error.emit(str(exc))
            return False
        if self.store is not None:
            self.store.close()
        self.store = store
        self.project_changed.emit(store)
        self.open_images(source)
        if store.read_only is not None:
            self.error.emit(P.read_only_note(store))
        return True

    def close_project(self) -> None:
        """Close the project (everything in it is saved); the images show model results."""
        if self.store is None:
            return
        self.store.close()
        self.store = None
        self.history.clear()
        P.detach(self._images)
        self.project_changed.emit(None)
        self.history_changed.emit()
        for i in range(len(self)):
            self._emit_state(i)
        self._load_current()

    def export_coco(self, path: str | Path, segmentation: str = "rle",
                    reviewed_only: bool = False) -> CocoDataset | None:
        """Export the project's corrected annotations as COCO JSON.

        Args:
            path: the file to write (atomically).
            segmentation: "rle" (lossless) or "polygon".
            reviewed_only: only images marked reviewed.

        Returns:
            The written dataset; None (and the error event) without a project or on failure.
        """
        from ..project.exchange import export_coco

        if self.store is None:
            self.error.emit("open or create a project before exporting")
            return None
        try:
            return export_coco(self.store, path, segmentation, reviewed_only)
        except (CellsegError, OSError) as exc:
            self.error.emit(f"export failed: {exc}")
            return None

    # ================================================================== internals
    def _current(self) -> ReviewImage | None:
        return self._images[self.index] if 0 <= self.index < len(self) else None

    def _uid_source(self) -> Callable[[], int] | None:
        return self.store.new_uid if self.store is not None else None

    def _compose_key(self, index: int) -> tuple[tuple[RawKey, ...], Settings]:
        return tuple(self.raw_keys(index)), self.settings.pipeline()

    def _compose(self, index: int) -> None:
        """Compose image ``index`` from cached raw outputs (if they are all there)."""
        keys, settings = ckey = self._compose_key(index)
        try:
            self._images[index].compose(ckey, lambda: self.outputs.compose(list(keys), settings))
        except ValueError as exc:  # e.g. an ensemble of models with different outputs
            self.error.emit(f"post-processing failed: {exc}")

    def _load_current(self) -> None:
        """Bring the current image's annotations up to date (project rows, or the result)."""
        rec = self._current()
        if rec is not None and self.store is not None and rec.stored and not rec.touched:
            rec.ann, rec.ann_from = self.store.load(rec.image_id), None
        self._refresh_current(force=True)

    def _refresh_current(self, force: bool = False) -> None:
        """Follow the composed result unless the image was edited or comes from the project."""
        rec = self._current()
        if rec is None:
            return
        self._compose(self.index)
        if rec.follow(self.composed(self.index), self._uid_source(), force) or force:
            self.annotations_changed.emit(self.index)
        self._emit_state(self.index)

    def _emit_state(self, index: int) -> None:
        """state_changed only when the state really changed (listeners repaint list rows)."""
        state = self._images[index].state
        if self._last_states.get(index) != state:
            self._last_states[index] = state
            self.state_changed.emit(index, state)
