"""Where the review window's features are built: the one place that makes the editing
controller, the training launcher, the first-run guidance, the actions with their commands, the
menus, the Editing toolbar and the Review and History docks, and hands each what it needs.

``MainWindow.__init__`` calls :func:`build_features` once, after its own widgets; nothing is
added to the window or replaced afterwards.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget, QLabel, QMenu, QToolBar, QUndoView

from cellseg.core.project.states import Review

from . import interop_menu, window_dialogs as dialogs
from .actions import SAMPLE_TIP, TOOLBAR, TOOLS, ActionRegistry
from .editing import EditingController
from .editing import menus as editing_menus
from .editing.assist import assist_controls, step as assist_step
from .editing.panel import ReviewPanel, history_view
from .first_run import FirstRun
from .interop_menu import EXPORTS, IMPORTS
from .sample import open_sample
from .training import TrainingLauncher


@dataclass(frozen=True)
class Features:
    """What :func:`build_features` made for the window."""

    editing: EditingController
    training: TrainingLauncher
    first_run: FirstRun
    registry: ActionRegistry
    menus: dict[str, QMenu]
    toolbar: QToolBar
    review_panel: ReviewPanel
    history: QUndoView
    draw_as: editing_menus.DrawAsBox
    docks: dict[str, QDockWidget]


def commands(w, c: EditingController, training: TrainingLauncher) -> dict[str, Callable]:
    """The command of every action id of ``app.actions.ACTIONS`` (undo/redo: the stack's)."""
    canvas = w.canvas
    out: dict[str, Callable] = {
        "open_folder": partial(dialogs.ask_folder, w), "open_file": partial(dialogs.ask_file, w),
        "open_coco": partial(dialogs.ask_coco, w), "open_sample": partial(open_sample, w),
        "screenshot": partial(dialogs.ask_screenshot, w), "quit": w.close,
        "reviewed": c.mark_reviewed,  # an undoable, saved edit
        "delete": c.delete_selected, "merge": c.merge_selected,
        "accept": partial(c.review_selected, Review.ACCEPTED),
        "reject": partial(c.review_selected, Review.REJECTED),
        "fill_all": c.fill_holes_selected, "next_instance": partial(assist_step, c, 1),
        "previous_instance": partial(assist_step, c, -1), "next_unreviewed": c.next_unreviewed,
        "refine": c.assist.refine, "accept_candidates": c.assist.accept_in_view,
        "bigger": partial(c.resize_brush, 1.25), "smaller": partial(c.resize_brush, 0.8),
        "finish_shape": c.finish_polygon,
        "fit": canvas.fit_to_window, "one": canvas.zoom_1to1,
        "zoom_in": partial(canvas.zoom_by, 1.25), "zoom_out": partial(canvas.zoom_by, 0.8),
        "next": partial(w.step, 1), "previous": partial(w.step, -1),
        "overlay": w.display_panel.show_overlay.setChecked,
        "set_cascade": partial(dialogs.ask_model, w, "cascade"),
        "set_pointrend": partial(dialogs.ask_model, w, "pointrend"),
        "run": w.run_current, "run_all": w.run_all, "cancel": w.cancel,
        "train": training.open, "shortcuts": w.show_shortcuts,
        "about": partial(dialogs.show_about, w),
        "new_project": partial(editing_menus.ask_new_project, w, c),
        "open_project": partial(editing_menus.ask_open_project, w, c),
        "project_import_coco": partial(editing_menus.ask_import, w, c),
        "project_export_coco": partial(editing_menus.ask_export, w, c, "coco"),
        "project_export_tiff": partial(editing_menus.ask_export, w, c, "label-tiff"),
    }
    out.update({f"class{k}": partial(c.set_class_selected, k - 1) for k in range(1, 10)})
    out.update({f"tool_{name}": partial(c.choose_tool, name) for name, *_ in TOOLS})
    out.update({f"import_{k}": partial(interop_menu.ask_import, w, k) for k, *_ in IMPORTS})
    out.update({f"export_{k}": partial(interop_menu.ask_export, w, k) for k, _ in EXPORTS})
    return out


def _dock(window, title: str, name: str, widget) -> QDockWidget:
    dock = QDockWidget(title, window)
    dock.setObjectName(name)
    dock.setWidget(widget)
    window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)
    return dock


def build_features(window) -> Features:
    """Build every feature of ``window`` (its canvas, panels, docks, undo stack and service
    made) and connect them; returns them for the window to keep."""
    c = EditingController(window)
    training = TrainingLauncher(window)
    first_run = FirstRun(window, SAMPLE_TIP)
    stack = window.undo_stack
    registry = ActionRegistry(window, commands(window, c, training),
                              made={"undo": stack.createUndoAction(window, "&Undo"),
                                    "redo": stack.createRedoAction(window, "&Redo")},
                              scopes={"canvas": window.canvas})
    registry["overlay"].setChecked(True)
    registry["cancel"].setEnabled(False)  # while a model run is on (and Esc is free otherwise)
    window.display_panel.show_overlay.toggled.connect(registry["overlay"].setChecked)
    # the docks the window made can be shown again from View (the editing docks as before not)
    menus = registry.build_menus(window.menuBar(), {
        "docks": [d.toggleViewAction() for d in window.docks.values()]})

    toolbar = QToolBar("Editing", window)
    toolbar.setObjectName("editing-toolbar")
    window.addToolBar(Qt.ToolBarArea.TopToolBarArea, toolbar)
    draw_as = editing_menus.DrawAsBox(c, window)
    registry.fill(toolbar, TOOLBAR, {"draw_as": [QLabel(" Draw as ", window), draw_as],
                                     "assist": assist_controls(window, c.assist)}, menus)
    c.tool_chosen.connect(lambda name: name and registry[f"tool_{name}"].setChecked(True))

    panel = ReviewPanel(c, window)
    history = history_view(stack, window)
    docks = {"review": _dock(window, "Review", "review-dock", panel),
             "history": _dock(window, "History", "history-dock", history)}

    window.legend.class_renamed.connect(c.rename_class)
    window.image_shown.connect(lambda _: draw_as.fill())
    window.image_shown.connect(lambda _: panel.set_classes(list(window.class_names)))
    c.project_changed.connect(lambda store: panel.set_classes(
        [cat.name for cat in store.categories()] if store is not None else []))
    c.classes_changed.connect(panel.set_classes)
    menus["classes"].aboutToShow.connect(
        lambda: editing_menus.fill_class_menu(menus["classes"], c, window.class_names))
    menus["recent_projects"].aboutToShow.connect(
        lambda: editing_menus.fill_recent_projects(menus["recent_projects"], c, window.settings))
    dialogs.fill_recent(menus["recent"], window)
    c.choose_tool("select")
    return Features(c, training, first_run, registry, menus, toolbar, panel, history, draw_as,
                    docks)
