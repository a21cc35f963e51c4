"""The editing controller: the current image's editing model, selection, review filters, tools
(the Box tool's model help too) and the project, wired to the window's canvas and undo stack.

Without a project, edits live in the window's per-image memory. With one open, each image is
matched to a project image by its path relative to the images folder; stored annotations replace
the predictions on screen and every finished edit (and undo/redo) is one committed transaction.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal

from cellseg.core.errors import CellsegError
from cellseg.core.project import edits as E
from cellseg.core.project.annotations import ImageAnnotations
from cellseg.core.project.states import Edit, Review
from cellseg.core.project.store import ProjectStore
from cellseg.core.review.project import project_name, write_edit

from .commands import EditCommand
from .project_ops import ProjectOpsMixin
from .project_view import ProjectViewMixin
from .assist import Assist, BoxTool
from .tools import BrushTool, FillTool, LassoTool, PolygonTool, SelectTool, SplitTool


class EditingController(ProjectOpsMixin, ProjectViewMixin, QObject):
    changed = Signal()  # annotations, selection or filters changed
    project_changed = Signal(object)  # ProjectStore | None
    classes_changed = Signal(list)  # class names (renamed, or another project's)
    drawing_class_changed = Signal(int)  # the class new drawings get
    tool_chosen = Signal(str)  # the active tool's name ("" for none)

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.canvas = window.canvas
        self.undo_stack = window.undo_stack
        self.store: ProjectStore | None = None
        self.image_id: int | None = None
        self.ann: ImageAnnotations | None = None
        self.stored = False  # the current image's instances are rows of the project
        self.selected: set[int] = set()  # uids
        self.allow_overlap = False
        self.brush_radius = 6
        self.current_class = 0
        self.max_score: float | None = None  # review filter: only instances scoring below
        self.only_class: int | None = None  # review filter: only this class
        self._rows = np.zeros(0, np.int64)  # ann rows shown on the canvas, in canvas order
        self._busy, self._last_shown = False, None  # the Instances last handed to the window
        # without a project: uids the image started with, and deletions on earlier visits
        self._initial_uids: set[int] = set()
        self._deleted_before: dict[int, int] = {}
        self._shown_index = -1
        self._opening = False  # opening the project's own folder: nothing to ask
        self.tools = {"select": SelectTool(self), "brush": BrushTool(self),
                      "eraser": BrushTool(self, erase=True), "lasso": LassoTool(self),
                      "polygon": PolygonTool(self), "split": SplitTool(self),
                      "fill": FillTool(self)}
        self.assist = Assist(self)  # box prompts, candidates, refine (the model's help)
        self.tools["box"] = BoxTool(self, self.assist)
        self.active_tool = None
        window.image_shown.connect(self._image_shown)
        window.instances_changed.connect(self._instances_changed)

    # ================================================================== tools
    def choose_tool(self, name: str | None) -> None:
        """Make tool ``name`` (a key of :attr:`tools`) the canvas's; None for none."""
        if self.active_tool is not None:
            self.active_tool.deactivate()
        self.active_tool = self.tools.get(name) if name else None
        if self.active_tool is not None:
            self.active_tool.activate()
        self.canvas.set_tool(self.active_tool)
        self.tool_chosen.emit(name if self.active_tool is not None else "")

    def resize_brush(self, factor: float) -> None:
        """``[`` and ``]``: the brush radius times ``factor`` (at least one pixel of change
        below 5 px, where rounding would keep it), within 1-200 px."""
        r = self.brush_radius
        self.brush_radius = int(min(200, max(1, round(r * factor)
                                             + (1 if factor > 1 else -1) * (r < 5))))
        self.changed.emit()

    def finish_polygon(self) -> None:
        """Enter: close the polygon, or accept the candidate Tab reached (Box tool)."""
        if isinstance(self.active_tool, (PolygonTool, BoxTool)):
            self.active_tool.finish()

    # ================================================================== image changes
    def _image_shown(self, index: int) -> None:
        self._warn_read_only()  # (the window cleared the banner for the new image)
        if self.ann is not None and self.store is None and self._shown_index >= 0:
            self._deleted_before[self._shown_index] = self._deleted_here()
        self._shown_index = index
        self.selected.clear()
        self._last_shown = None
        self.ann = None
        self.stored = False
        self.image_id = None
        if self.store is None or self.window.image is None:
            return
        path = Path(self.window.source.entries[index].path)
        name = project_name(self.store, path)
        h, w = self.window.image.shape[:2]
        try:
            record = self.store.image_by_name(name) or self.store.add_image(name, h, w)
        except CellsegError as exc:
            self.window.show_error(str(exc))
            return
        if record.image_size != (h, w):
            self.window.show_error(f"{name} is {w}x{h} but the project has it as "
                                   f"{record.width}x{record.height}; edits are not saved")
            return
        self.image_id = record.id
        self.reload_current()

    def reload_current(self) -> None:
        """Show the project's annotations of the current image (after an import added some)."""
        if self.store is None or self.image_id is None:
            return
        rows = self.store.counts(self.image_id)
        has_rows = rows.instances + rows.deleted > 0
        if has_rows or self.store.image(self.image_id).reviewed:
            self.ann = self.store.load(self.image_id)
            self.stored = True
            self.selected &= set(self.ann.uids.tolist())
            self._show(edited=True)
        elif self.ann is not None:
            self.ann.reviewed = self.store.image(self.image_id).reviewed

    def _instances_changed(self, instances) -> None:
        """The window shows new instances (model result, post-processing change, image change)."""
        if self._busy:
            return
        if self.stored or (instances is not None and instances is self._last_shown):
            # the project's annotations win over predictions; and the window re-showing what
            # this controller gave it (its per-image memory) must not reset the editing model
            self._show(edited=True)
            return
        image = self.window.image
        if instances is None or instances.masks is None:
            if image is None:
                self.ann = None
                return
            self.ann = ImageAnnotations.empty(image.shape[:2], self._uid_source())
        else:
            source = self._uid_source()
            uids = None if source is None else [source() for _ in range(len(instances))]
            self.ann = ImageAnnotations.from_instances(instances, uids=uids, uid_source=source)
        self._initial_uids = set(self.ann.uids.tolist())
        self.ann.reviewed = self.window.is_reviewed(self.window.index)
        self.selected.clear()
        self._rows = np.arange(len(self.ann))
        self._apply_filter_view()
        self.changed.emit()

    def _uid_source(self):
        return self.store.new_uid if self.store is not None else None

    # ================================================================== applying edits
    def push(self, edit: Edit | None, already_applied: bool = False) -> bool:
        """Put a finished edit on the undo stack (which applies and saves it)."""
        if edit is None or edit.is_noop():
            return False
        self.undo_stack.push(EditCommand(self, edit, already_applied))
        return True

    def run(self, make_edit) -> bool:
        """``make_edit(ann)`` -> Edit; an EditError becomes a status message."""
        if self.ann is None:
            self.window.statusBar().showMessage("no image to edit", 3000)
            return False
        try:
            edit = make_edit(self.ann)
        except CellsegError as exc:
            self.window.statusBar().showMessage(str(exc), 5000)
            return False
        return self.push(edit)

    def commit(self, edit: Edit, apply: bool = True) -> bool:
        """Apply (unless already applied), save as one transaction, refresh the view.

        Returns False when the project refuses the edit (read-only, disk full, journal lost):
        the edit is then taken back on screen too, so what is shown is what is saved, and the
        banner says why.
        """
        if self.ann is None:
            return False
        saved = self._save(edit, applied=not apply)
        if saved and apply:
            self.ann.apply(edit)
        elif not saved and not apply:
            self.ann.undo(edit)  # a live stroke already changed ann
        self.selected &= set(self.ann.uids.tolist())
        if saved and edit.reviewed is not None:
            self._sync_window_reviewed(edit.reviewed[1])
        self._show(edited=True)
        return saved

    def _save(self, edit: Edit, applied: bool) -> bool:
        """Write the edit to the project (if one is open); False if it was refused."""
        if self.store is None or self.image_id is None:
            return True  # no project: edits live in the window's per-image memory
        # the review session's write: the predictions shown so far become project rows with
        # the first edit; a refusal (read-only, disk full, journal lost) says why
        refused = write_edit(self.store, self.image_id, self.ann, edit, applied,
                             first=not self.stored)
        if refused is not None:
            self.window.show_error(refused)
            return False
        self.stored = True
        return True

    # ================================================================== view
    def _show(self, edited: bool) -> None:
        """Hand the annotations to the window (full overlay update) and apply the filters."""
        if self.ann is None:
            return
        self._busy = True
        try:
            self._last_shown = self.ann.to_instances()
            self.window.set_current_instances(self._last_shown, edited=edited)
        finally:
            self._busy = False
        if edited:
            self._update_list_entry()
        self._apply_filter_view()
        self.changed.emit()

    def _apply_filter_view(self) -> None:
        visible = self.visible()
        self._rows = np.flatnonzero(visible)
        if len(self._rows) != len(self.ann):
            self.canvas.set_instances(self.ann.to_instances()[self._rows])
        # colours by uid (stable across deletes and undo) and the review state visible
        self.canvas.overlay.set_review_state(self.ann.uids[self._rows],
                                             self.ann.reviews[self._rows])
        self.canvas.overlay.set_selected(self.selected_positions())

    def _deleted_here(self) -> int:
        """Deletions on the current image without a project (this visit and earlier ones)."""
        gone = len(self._initial_uids - set(self.ann.uids.tolist())) if self.ann is not None else 0
        return self._deleted_before.get(self.window.index, 0) + gone

    def visible(self) -> np.ndarray:
        if self.ann is None:
            return np.zeros(0, bool)
        return self.ann.visible(max_score=self.max_score, class_id=self.only_class)

    def selected_positions(self) -> list[int]:
        """Canvas indices of the selected instances."""
        if self.ann is None or not self.selected:
            return []
        return self._canvas_positions(np.searchsorted(self.ann.uids, sorted(self.selected)))[1
                                                                                           ].tolist()

    def _canvas_positions(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows shown on the canvas, their canvas indices) of editing-model ``rows``."""
        rows = np.asarray(rows, np.int64)
        if len(self._rows) == 0 or len(rows) == 0:
            return rows[:0], rows[:0]
        pos = np.searchsorted(self._rows, rows)
        ok = (pos < len(self._rows)) & (self._rows[np.minimum(pos, len(self._rows) - 1)] == rows)
        return rows[ok], pos[ok]

    def render_rect(self, rect) -> None:
        """Re-render only ``rect`` of the overlay from the editing model (live brush strokes)."""
        if rect is None or self.ann is None:
            return
        if len(self._rows) != int(self.visible().sum()) or not np.array_equal(
                self._rows, np.flatnonzero(self.visible())):
            self._show(edited=True)  # instances appeared or vanished: full update
            return
        overlay = self.canvas.overlay
        x0, y0, x1, y1 = rect
        rows = np.searchsorted(self.ann.uids, self.ann.overlapping(rect))
        rows, pos = self._canvas_positions(rows)
        local = np.zeros((y1 - y0, x1 - x0), np.int32)
        if len(rows):
            # the overlay's stacking: higher scores on top, ties by canvas position
            order = np.lexsort((pos, self.ann.scores[rows]))
            inst, ys, xs = self.ann.masks[rows[order]].pixel_coordinates()
            inside = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
            local[ys[inside] - y0, xs[inside] - x0] = pos[order][inst[inside]] + 1
        overlay.labels[y0:y1, x0:x1] = local
        overlay.update_region(x0, y0, x1, y1)

    def _sync_window_reviewed(self, reviewed: bool) -> None:
        shown_reviewed = self.window.is_reviewed(self.window.index)
        if shown_reviewed != reviewed:
            self._busy = True
            try:
                self.window.toggle_reviewed()
            finally:
                self._busy = False

    # ================================================================== selection
    def select_at(self, x: float, y: float, add: bool = False) -> int | None:
        if self.ann is None:
            return None
        uid = self.ann.instance_at(x, y, self.visible())
        if not add:
            self.selected = set() if uid is None else {uid}
        elif uid is not None:
            self.selected ^= {uid}
        self.canvas.overlay.set_selected(self.selected_positions())
        self.changed.emit()
        return uid

    def select_next(self, step: int = 1) -> int | None:
        """Keyboard review: select the next visible instance, lowest score first."""
        if self.ann is None:
            return None
        rows = np.flatnonzero(self.visible())
        if rows.size == 0:
            return None
        rows = rows[np.argsort(self.ann.scores[rows], kind="stable")]
        uids = self.ann.uids[rows].tolist()
        current = next(iter(self.selected)) if len(self.selected) == 1 else None
        k = uids.index(current) + step if current in uids else (0 if step > 0 else -1)
        uid = uids[k % len(uids)]
        self.selected = {uid}
        self.canvas.overlay.set_selected(self.selected_positions())
        x0, y0, x1, y1 = self.ann.masks.windows[self.ann.index_of(uid)]
        self.canvas.center_on_pixel((x0 + x1) / 2, (y0 + y1) / 2)
        self.changed.emit()
        return uid

    def uid_at_position(self, pos: int) -> int:
        """The uid of canvas instance ``pos`` (the id History names), or ``pos`` if unknown."""
        if self.ann is None or not 0 <= pos < len(self._rows):
            return pos
        return int(self.ann.uids[self._rows[pos]])

    def single_selected(self) -> int | None:
        return next(iter(self.selected)) if len(self.selected) == 1 else None

    # ================================================================== commands
    def delete_selected(self) -> bool:
        return bool(self.selected) and self.run(lambda a: E.delete(a, self.selected))

    def review_selected(self, review: Review) -> bool:
        return bool(self.selected) and self.run(lambda a: E.set_review(a, self.selected, review))

    def merge_selected(self) -> bool:
        return self.run(lambda a: E.merge(a, self.selected))

    def fill_holes_selected(self) -> bool:
        uid = self.single_selected()
        return uid is not None and self.run(lambda a: E.fill_holes(a, uid))

    def mark_reviewed(self, reviewed: bool | None = None) -> bool:
        if self.ann is None:
            return False
        flag = (not self.ann.reviewed) if reviewed is None else bool(reviewed)
        return self.run(lambda a: E.set_image_reviewed(a, flag))

    def next_unreviewed(self) -> bool:
        """Show the next image not marked reviewed (project images, or the window's list)."""
        source = self.window.source
        if source is None:
            return False
        names = [Path(e.path) for e in source.entries]
        if self.store is not None:
            done = {(self.store.images_dir / im.file_name).resolve()
                    for im in self.store.images(reviewed=True)}
        else:
            done = {p.resolve() for i, p in enumerate(names) if self.window.is_reviewed(i)}
        n = len(names)
        for k in range(1, n + 1):
            i = (self.window.index + k) % n
            if names[i].resolve() not in done:
                self.window.image_list.set_current(i)
                return True
        self.window.statusBar().showMessage("every image is reviewed", 5000)
        return False

    def set_filter(self, max_score: float | None = None, only_class: int | None = None) -> None:
        self.max_score, self.only_class = max_score, only_class
        if self.ann is not None:
            self.selected &= set(self.ann.uids[self.visible()].tolist())
            self._show(edited=self.stored or self.window.is_edited(self.window.index))

    def counts(self) -> dict[str, int]:
        """Counts of the current image (deleted ones from the project)."""
        if self.ann is None:
            return {}
        c = dict(self.ann.counts())
        if self.store is not None and self.image_id is not None and self.stored:
            c["deleted"] = self.store.counts(self.image_id).deleted
        else:
            c["deleted"] = self._deleted_here() if self.store is None else 0
        c["shown"] = int(self.visible().sum())
        return c
