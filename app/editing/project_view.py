"""What the window shows of the project: each image's status and cell count in the image list,
the project's stored models, its class names (renamable) and the class new drawings get.

A mixin of :class:`EditingController` (kept apart so the controller stays about editing); it
uses the controller's ``window``, ``store``, ``ann``, ``image_id``, ``stored`` and signals.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from cellseg.core.errors import CellsegError
from cellseg.core.project import edits as E
from cellseg.core.project.classes import check_class_index
from cellseg.core.project.status import cells, image_statuses
from cellseg.core.review.project import project_name


class ProjectViewMixin:
    def _load_stored_models(self) -> None:
        """Set the models the project was made with (newest per slot), unless already set."""
        from ..first_run import model_slot

        chosen: dict[str, tuple[str, str]] = {}
        missing = []
        for m in self.store.models():
            if not (Path(m.config).is_file() and Path(m.weights).is_file()):
                missing.append(Path(m.weights).name)
                continue
            try:
                chosen[model_slot(m.config)] = (m.config, m.weights)
            except CellsegError as exc:
                missing.append(f"{Path(m.config).name} ({exc})")
        for slot, (config, weights) in chosen.items():
            if self.window.models_panel.model_paths(slot) != (config, weights):
                self.window.set_model(slot, config, weights)
        if missing:
            self.window.statusBar().showMessage(
                "the project's model files are not there any more: " + ", ".join(missing), 10000)

    def _entry_name(self, path) -> str:
        return project_name(self.store, path)

    def sync_list(self) -> None:
        """Every image's status and cell count in the image list, from the project."""
        if self.store is None or self.window.source is None:
            return
        statuses = image_statuses(self.store)
        for i, entry in enumerate(self.window.source.entries):
            st = statuses.get(self._entry_name(entry.path))
            if st is not None and st.status != "not run":
                self._set_list_status(i, st.status, st.cells)

    def _set_list_status(self, index: int, status: str, count: int | None) -> None:
        # the window's own record of reviewed images agrees
        self.window.set_reviewed_mark(index, status == "reviewed")
        self.window.image_list.set_status(index, status, count)

    def _update_list_entry(self) -> None:
        """The current image's status and cell count after an edit (one source: the project,
        or without one the editing model), so the Cells column never goes stale."""
        i = self.window.index
        if self.ann is None or i < 0:
            return
        if self.store is not None and self.image_id is not None and self.stored:
            st = next(iter(image_statuses(self.store, self.image_id).values()))
            self._set_list_status(i, st.status, st.cells)
        elif self.window.is_edited(i) or self.ann.reviewed:
            self._set_list_status(i, "reviewed" if self.ann.reviewed else "edited",
                                  cells(self.ann))

    def rename_class(self, class_index: int, name: str) -> bool:
        """Rename a class: in the project's categories (exports use the name), else on screen."""
        from dataclasses import replace

        if self.store is not None:
            cats = self.store.categories()
            if not 0 <= class_index < len(cats):
                return False
            try:
                if self.store.read_only is not None:
                    raise CellsegError(f"project {self.store.path} is open read-only "
                                       f"({self.store.read_only}): the name was not saved")
                self.store.set_categories([replace(c, name=name) if c.class_index == class_index
                                           else c for c in cats])
            except (CellsegError, sqlite3.Error) as exc:
                self.window.show_error(f"cannot rename the class: {exc}")
                self.window.set_class_names(self.class_names())
                return False
            names = self.class_names()
        else:
            names = list(self.window.class_names)
            names += [f"class {k + 1}" for k in range(len(names), class_index + 1)]
            names[class_index] = name
        self.window.set_class_names(names)
        self.classes_changed.emit(names)
        return True

    def class_names(self) -> list[str]:
        """The classes an instance may have: the project's categories, else the model's."""
        if self.store is not None:
            return [cat.name for cat in self.store.categories()]
        return list(self.window.class_names)

    def set_class_selected(self, class_id: int) -> bool:
        """Give the selection (and new drawings) class ``class_id``; a class the project (or
        model) does not define is refused with a message, so the project stays exportable."""
        names = self.class_names()
        if names:
            try:
                check_class_index(names, class_id,
                                  "this project" if self.store is not None else "the model")
            except CellsegError as exc:
                self.window.statusBar().showMessage(str(exc), 8000)
                return False
        self.set_drawing_class(class_id)
        return bool(self.selected) and self.run(lambda a: E.set_class(a, self.selected, class_id))

    def set_drawing_class(self, class_id: int) -> None:
        """The class new drawings (brush with nothing selected, lasso, polygon) get."""
        self.current_class = int(class_id)
        self.drawing_class_changed.emit(self.current_class)
