"""Opening, creating, importing into, exporting and closing the review's project.

A mixin of :class:`EditingController` (kept apart so the controller stays about editing); it
uses the controller's ``window``, ``store``, ``undo_stack``, signals and ``_opening`` flag.
"""
from __future__ import annotations

from pathlib import Path

from cellseg.core.errors import CellsegError
from cellseg.core.project.store import ProjectStore

from .unsaved import may_leave, save_into, unsaved


class ProjectOpsMixin:
    def open_project(self, path: str | Path) -> bool:
        """Open a project and show its images; False (and a message) on error."""
        try:
            store = ProjectStore.open(path)
        except CellsegError as exc:
            self.window.show_error(str(exc))
            return False
        if self.store is not None and self.store.path.resolve() != store.path.resolve():
            if not may_leave(self, f"Opening {store.path.name}", store.images_dir):
                store.close()
                return False
        self._set_store(store)
        self._opening = True  # the window opens the project's own folder: nothing to ask
        try:
            if not self.window.open_path(store.images_dir):
                return False
        finally:
            self._opening = False
        self.sync_list()
        self._warn_read_only()
        self.window.settings.add_recent_project(store.path)
        self._load_stored_models()
        return True

    def _warn_read_only(self) -> None:
        if self.store is not None and self.store.read_only is not None:
            self.window.show_error(f"project {self.store.path} is open read-only "
                                   f"({self.store.read_only}): you can look and export, but "
                                   "edits are not saved")

    def new_project(self, path: str | Path, images_dir: str | Path | None = None) -> bool:
        """Create a project for ``images_dir`` (default: the folder the window shows)."""
        from cellseg.core.project.exchange import create_project

        if images_dir is None:
            if self.window.source is None:
                self.window.show_error("open a folder of images first")
                return False
            images_dir = self.window.source.root
        # the models on screen go into the project: reopening it loads them, and their class
        # count sets the project's categories
        panel = self.window.models_panel
        models = [panel.model_paths(k) for k in ("cascade", "pointrend")
                  if self.window.service.has_model(k) and all(panel.model_paths(k))]
        edits = unsaved(self.window) if self.store is None else {}
        try:
            create_project(images_dir, path, models=models)
            if edits:  # edits made before the project existed go into it
                with ProjectStore.open(path) as store:
                    saved = save_into(store, edits)
        except CellsegError as exc:
            self.window.show_error(str(exc))
            return False
        if not self.open_project(path):
            return False
        if edits:
            self.window.statusBar().showMessage(
                f"the edits of {saved} image{'s' if saved != 1 else ''} are saved in the project",
                8000)
        return True

    def may_leave(self, doing: str, next_path=None) -> bool:
        """Ask before edits without a project (or the open project) would be dropped."""
        return self._opening or may_leave(self, doing, next_path)

    def import_coco(self, path: str | Path) -> bool:
        """Add a COCO file's annotations to the open project (all or nothing)."""
        from cellseg.core.project.exchange import import_coco

        if self.store is None:
            self.window.show_error("open or create a project before importing")
            return False
        try:
            summary = import_coco(self.store, path, images_root=self.store.images_dir)
        except CellsegError as exc:
            self.window.show_error(str(exc))
            return False
        self.window.statusBar().showMessage(
            f"imported {summary.instances} instances on {summary.images_added + summary.images_matched}"
            " images", 5000)
        self.reload_current()
        return True

    def export(self, path: str | Path, fmt: str = "coco", segmentation: str = "rle",
               reviewed_only: bool = False) -> bool:
        from cellseg.core.project.exchange import export_coco, export_label_tiffs

        if self.store is None:
            self.window.show_error("open or create a project before exporting")
            return False
        try:
            if fmt == "coco":
                export_coco(self.store, path, segmentation, reviewed_only)
            else:
                export_label_tiffs(self.store, path, reviewed_only)
        except (CellsegError, OSError) as exc:
            self.window.show_error(f"export failed: {exc}")
            return False
        self.window.statusBar().showMessage(f"exported to {path}", 5000)
        return True

    def close_project(self) -> None:
        self._set_store(None)

    def _set_store(self, store: ProjectStore | None) -> None:
        if self.store is not None:
            self.store.close()
        self.store = store
        self.image_id = None
        self.stored = False
        if store is not None and self.current_class >= max(1, len(store.categories())):
            self.current_class = 0  # the drawing class of another project's class set
        self.undo_stack.clear()
        if store is not None and store.categories():
            self.window.set_class_names(self.class_names())  # the project's names win
        self.project_changed.emit(store)
        self.classes_changed.emit(self.class_names())
        self.drawing_class_changed.emit(self.current_class)
