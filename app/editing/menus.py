"""The editing widgets of the menus and toolbar: Edit > Change class, Project > Open recent
project, the toolbar's "Draw as" class box, and the Project menu's file questions.

Each is a thin view over the :class:`EditingController` it is given: it reads the controller's
classes and listens to its signals; choosing calls a controller command.
"""
from __future__ import annotations

from functools import partial

from PySide6.QtWidgets import QComboBox, QMenu

from .. import file_dialogs


def fill_class_menu(menu: QMenu, controller, names: list[str]) -> None:
    """Edit > Change class: one entry per class shown (the legend's), else 1-9."""
    menu.clear()
    names = list(names) or [f"class {k + 1}" for k in range(9)]
    for k, name in enumerate(names):
        menu.addAction(f"{k + 1}: {name}", partial(controller.set_class_selected, k))


def fill_recent_projects(menu: QMenu, controller, settings) -> None:
    """Project > Open recent project: the projects of the settings, newest first."""
    menu.clear()
    paths = settings.recent_projects()
    for p in paths:
        menu.addAction(p, partial(controller.open_project, p))
    if not paths:
        menu.addAction("(none yet)").setEnabled(False)


class DrawAsBox(QComboBox):
    """The class a new drawing gets, always in view (1-9 or this box change it)."""

    def __init__(self, controller, parent=None) -> None:
        super().__init__(parent)
        self.c = controller
        self.setToolTip("Class of new drawings (brush with nothing selected, lasso, polygon); "
                        "1-9 set it too. Rename a class by double-clicking it in the Legend.")
        controller.classes_changed.connect(self.fill)
        controller.drawing_class_changed.connect(self._show_class)
        self.activated.connect(controller.set_drawing_class)
        self.fill()

    def fill(self, names=None) -> None:
        names = list(names if names is not None else self.c.class_names()) or ["class 1"]
        self.blockSignals(True)
        self.clear()
        self.addItems([f"{k + 1}: {n}" for k, n in enumerate(names)])
        self.setCurrentIndex(min(self.c.current_class, len(names) - 1))
        self.blockSignals(False)

    def _show_class(self, k: int) -> None:
        self.blockSignals(True)
        self.setCurrentIndex(k)
        self.blockSignals(False)


def ask_new_project(window, c) -> None:
    path, _ = file_dialogs.get_save_file_name(window, "New project", "project.cellseg",
                                              "cellseg project (*.cellseg)")
    if path:
        c.new_project(path)


def ask_open_project(window, c) -> None:
    path, _ = file_dialogs.get_open_file_name(window, "Open project", "",
                                              "cellseg project (*.cellseg)")
    if path:
        c.open_project(path)


def ask_import(window, c) -> None:
    path, _ = file_dialogs.get_open_file_name(window, "Import COCO annotations", "",
                                              "COCO (*.json)")
    if path:
        c.import_coco(path)


def ask_export(window, c, fmt: str) -> None:
    if fmt == "coco":
        path, _ = file_dialogs.get_save_file_name(window, "Export COCO", "annotations.json",
                                                  "COCO (*.json)")
    else:
        path = file_dialogs.get_existing_directory(window, "Export label TIFFs into folder")
    if path:
        c.export(path, fmt)
