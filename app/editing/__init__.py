"""Correcting masks in the review window: tools, undoable commands, review flow and the project.

``install_editing(window)`` adds to an existing :class:`MainWindow` an "Editing" toolbar,
keyboard shortcuts, a "Review" dock (counts, filters, brush size, overlap rule), an undo
"History" dock and a "Project" menu, and returns the :class:`EditingController`
(also ``window.editing``).

Keyboard-only review: Tab / Shift+Tab step through the visible instances (lowest score first),
A accepts, X rejects, Del deletes, 1-9 set the class, M merges the selection, Ctrl+R marks the
image reviewed, N jumps to the next unreviewed image; Ctrl+Z / Ctrl+Shift+Z undo and redo.
Tools: S select, B brush, E eraser ([ and ] resize), L lasso, P polygon (Enter or right click
closes), K split along a line, H fill a hole, D box prompt (the model draws the cell in a dragged
box; candidates, Shift+A, Tab and Enter: see :mod:`.assist`), R refine with PointRend.
"""
from __future__ import annotations

from functools import partial

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QIcon, QKeySequence
from PySide6.QtWidgets import QComboBox, QDockWidget, QLabel, QToolBar

from cellseg.core.project.states import Review

from .assist import BoxTool, install_assist
from .controller import EditingController
from .panel import ReviewPanel, history_view
from .tools import BrushTool, FillTool, LassoTool, PolygonTool, SelectTool, SplitTool
from .. import file_dialogs

__all__ = ["install_editing", "EditingController"]

TOOLS = [  # key, label, shortcut, icon (qtawesome name)
    ("select", "Select", "S", "fa5s.mouse-pointer"),
    ("brush", "Brush", "B", "fa5s.paint-brush"),
    ("eraser", "Eraser", "E", "fa5s.eraser"),
    ("lasso", "Lasso (draw instance)", "L", "fa5s.draw-polygon"),
    ("polygon", "Polygon (draw instance)", "P", "fa5s.vector-square"),
    ("split", "Split along a line", "K", "fa5s.cut"),
    ("fill", "Fill hole", "H", "fa5s.fill-drip"),
]


def _icon(name: str):
    try:
        import qtawesome

        return qtawesome.icon(name)
    except Exception:  # icon fonts unavailable: text-only buttons
        return QIcon()


def install_editing(window) -> EditingController:
    c = EditingController(window)
    window.editing = c
    c.tools = {"select": SelectTool(c), "brush": BrushTool(c), "eraser": BrushTool(c, erase=True),
               "lasso": LassoTool(c), "polygon": PolygonTool(c), "split": SplitTool(c),
               "fill": FillTool(c)}
    c.active_tool = None

    # "1" zooms to 1:1 in the window; number keys set classes while editing
    one = getattr(window, "actions", {}).get("one")
    if one is not None:
        one.setShortcut(QKeySequence("Ctrl+1"))

    # Ctrl+Shift+Z redoes everywhere (a StandardKey shortcut alone gives only Ctrl+Y here)
    redo_keys = QKeySequence(QKeySequence.StandardKey.Redo)
    redo = next((x for x in getattr(window, "edit_menu", window.menuBar()).actions()
                 if x.shortcut() == redo_keys), None)
    if redo is None:
        redo = window.undo_stack.createRedoAction(window, "&Redo")
        window.addAction(redo)
    redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])

    bar = QToolBar("Editing", window)
    bar.setObjectName("editing-toolbar")
    window.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)
    group = QActionGroup(window)
    group.setExclusive(True)
    c.tool_actions = {}

    def choose(name: str | None) -> None:
        old = c.active_tool
        if old is not None:
            old.deactivate()
        tool = c.tools.get(name) if name else None
        c.active_tool = tool
        if tool is not None:
            tool.activate()
        window.canvas.set_tool(tool)
        if name in c.tool_actions:
            c.tool_actions[name].setChecked(True)

    c.choose_tool = choose
    for name, label, key, icon_name in TOOLS:
        action = QAction(_icon(icon_name), f"{label} ({key})", window)
        action.setCheckable(True)
        action.setShortcut(QKeySequence(key))
        action.triggered.connect(partial(choose, name))
        group.addAction(action)
        bar.addAction(action)
        c.tool_actions[name] = action
    bar.addSeparator()

    # the class a new drawing gets, always in view (1-9 or this box change it)
    draw_as = QComboBox(window)
    draw_as.setToolTip("Class of new drawings (brush with nothing selected, lasso, polygon); "
                       "1-9 set it too. Rename a class by double-clicking it in the Legend.")
    bar.addWidget(QLabel(" Draw as ", window))
    bar.addWidget(draw_as)
    c.draw_as = draw_as

    def fill_draw_as(names=None) -> None:
        names = list(names if names is not None else c.class_names()) or ["class 1"]
        draw_as.blockSignals(True)
        draw_as.clear()
        draw_as.addItems([f"{k + 1}: {n}" for k, n in enumerate(names)])
        draw_as.setCurrentIndex(min(c.current_class, len(names) - 1))
        draw_as.blockSignals(False)

    c.classes_changed.connect(fill_draw_as)
    c.drawing_class_changed.connect(lambda k: (draw_as.blockSignals(True),
                                               draw_as.setCurrentIndex(k),
                                               draw_as.blockSignals(False)))
    draw_as.activated.connect(c.set_drawing_class)
    if hasattr(window, "legend"):
        window.legend.class_renamed.connect(c.rename_class)
    window.image_shown.connect(lambda _: fill_draw_as())
    fill_draw_as()
    bar.addSeparator()

    def act(text, slot, keys, icon_name=None, on_bar=False) -> QAction:
        action = QAction(_icon(icon_name) if icon_name else QIcon(), text, window)
        action.setShortcuts([QKeySequence(k) for k in keys])
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.triggered.connect(lambda checked=False: slot())
        window.addAction(action)
        if on_bar:
            bar.addAction(action)
        return action

    c.actions = a = {}
    install_assist(window, c, bar, group, act, _icon)  # the Box tool, candidates, Refine (R)
    bar.addSeparator()
    a["delete"] = act("Delete selected (Del)", c.delete_selected,
                      [QKeySequence.StandardKey.Delete, "Backspace"], "fa5s.trash", True)
    a["merge"] = act("Merge selected (M)", c.merge_selected, ["M"], "fa5s.object-group", True)
    a["accept"] = act("Accept (A)", lambda: c.review_selected(Review.ACCEPTED), ["A"],
                      "fa5s.check", True)
    a["reject"] = act("Reject (X)", lambda: c.review_selected(Review.REJECTED), ["X"],
                      "fa5s.times", True)
    a["fill_all"] = act("Fill all holes of selected (Shift+H)", c.fill_holes_selected,
                        ["Shift+H"])
    a["next_instance"] = act("Next instance (Tab)", lambda: _step(c, 1), ["Tab"])
    # Shift+Tab only: X11 delivers it as Backtab and Qt matches it to Shift+Tab; a Backtab
    # binding as well made the key ambiguous there, and it did nothing
    a["previous_instance"] = act("Previous instance (Shift+Tab)", lambda: _step(c, -1),
                                 ["Shift+Tab"])
    a["next_unreviewed"] = act("Next unreviewed image (N)", c.next_unreviewed, ["N"],
                               "fa5s.forward", True)
    a["bigger"] = act("Bigger brush (])", lambda: _resize_brush(c, 1.25), ["]"])
    a["smaller"] = act("Smaller brush ([)", lambda: _resize_brush(c, 0.8), ["["])
    a["finish_shape"] = act("Finish polygon (Enter)", lambda: _finish_polygon(c),
                            ["Return", "Enter"])
    for k in range(1, 10):
        a[f"class{k}"] = act(f"Class {k}", partial(c.set_class_selected, k - 1), [str(k)])

    # "Mark reviewed" becomes an undoable, saved edit
    reviewed = getattr(window, "actions", {}).get("reviewed")
    if reviewed is not None:
        reviewed.triggered.disconnect()
        reviewed.triggered.connect(lambda checked=False: c.mark_reviewed())
        a["reviewed"] = reviewed
    else:
        a["reviewed"] = act("Mark image reviewed (Ctrl+R)", c.mark_reviewed, ["Ctrl+R"])
    bar.addAction(a["reviewed"])

    # class menu (names from the window's legend)
    edit_menu = getattr(window, "edit_menu", None) or window.menuBar().addMenu("&Edit")
    class_menu = edit_menu.addMenu("Change &class")

    def fill_class_menu() -> None:
        class_menu.clear()
        names = list(getattr(window, "class_names", [])) or [f"class {k + 1}" for k in range(9)]
        for k, name in enumerate(names):
            class_menu.addAction(f"{k + 1}: {name}", partial(c.set_class_selected, k))

    class_menu.aboutToShow.connect(fill_class_menu)
    c.class_menu = class_menu
    for key in ("delete", "merge", "accept", "reject", "fill_all", "next_instance",
                "previous_instance", "next_unreviewed"):
        edit_menu.addAction(a[key])

    # docks
    panel = ReviewPanel(c, window)
    dock = QDockWidget("Review", window)
    dock.setObjectName("review-dock")
    dock.setWidget(panel)
    window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)
    history = QDockWidget("History", window)
    history.setObjectName("history-dock")
    c.history = history_view(window.undo_stack, history)
    history.setWidget(c.history)
    window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, history)
    c.panel = panel
    c.docks = {"review": dock, "history": history}
    if hasattr(window, "docks"):
        window.docks.update(c.docks)

    def names_changed(*_):
        panel.set_classes(list(getattr(window, "class_names", [])))

    window.image_shown.connect(names_changed)
    c.project_changed.connect(lambda store: panel.set_classes(
        [cat.name for cat in store.categories()] if store is not None else []))
    c.classes_changed.connect(panel.set_classes)

    # project menu
    menu = window.menuBar().addMenu("&Project")
    a["new_project"] = QAction("&New project for this folder…", window)
    a["new_project"].triggered.connect(lambda: _ask_new_project(window, c))
    a["open_project"] = QAction("&Open project…", window)
    a["open_project"].triggered.connect(lambda: _ask_open_project(window, c))
    a["import_coco"] = QAction("&Import COCO annotations…", window)
    a["import_coco"].triggered.connect(lambda: _ask_import(window, c))
    a["export_coco"] = QAction("Export &COCO JSON…", window)
    a["export_coco"].triggered.connect(lambda: _ask_export(window, c, "coco"))
    a["export_tiff"] = QAction("Export &label TIFFs…", window)
    a["export_tiff"].triggered.connect(lambda: _ask_export(window, c, "label-tiff"))
    menu.addAction(a["new_project"])
    menu.addAction(a["open_project"])
    c.recent_projects_menu = menu.addMenu("Open &recent project")

    def fill_recent() -> None:
        recent = c.recent_projects_menu
        recent.clear()
        paths = window.settings.recent_projects() if hasattr(window, "settings") else []
        for p in paths:
            recent.addAction(p, partial(c.open_project, p))
        if not paths:
            recent.addAction("(none yet)").setEnabled(False)

    c.recent_projects_menu.aboutToShow.connect(fill_recent)
    c.fill_recent_projects = fill_recent
    for key in (None, "import_coco", None, "export_coco", "export_tiff"):
        menu.addSeparator() if key is None else menu.addAction(a[key])

    choose("select")
    return c


def _resize_brush(c: EditingController, factor: float) -> None:
    c.brush_radius = int(min(200, max(1, round(c.brush_radius * factor)
                                      + (1 if factor > 1 else -1) * (c.brush_radius < 5))))
    c.changed.emit()


def _finish_polygon(c: EditingController) -> None:
    tool = c.active_tool
    if isinstance(tool, (PolygonTool, BoxTool)):
        tool.finish()  # the polygon closes; the Box tool accepts the candidate Tab reached


def _step(c: EditingController, step: int) -> None:
    """Tab: the Box tool walks its candidates (while there are any), else the instances."""
    walk = getattr(c.active_tool, "walk", None)
    if walk is None or not walk(step):
        c.select_next(step)


def _ask_new_project(window, c) -> None:
    path, _ = file_dialogs.get_save_file_name(window, "New project", "project.cellseg",
                                          "cellseg project (*.cellseg)")
    if path:
        c.new_project(path)


def _ask_open_project(window, c) -> None:
    path, _ = file_dialogs.get_open_file_name(window, "Open project", "", "cellseg project (*.cellseg)")
    if path:
        c.open_project(path)


def _ask_import(window, c) -> None:
    path, _ = file_dialogs.get_open_file_name(window, "Import COCO annotations", "", "COCO (*.json)")
    if path:
        c.import_coco(path)


def _ask_export(window, c, fmt: str) -> None:
    if fmt == "coco":
        path, _ = file_dialogs.get_save_file_name(window, "Export COCO", "annotations.json",
                                              "COCO (*.json)")
    else:
        path = file_dialogs.get_existing_directory(window, "Export label TIFFs into folder")
    if path:
        c.export(path, fmt)
