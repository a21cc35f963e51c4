"""Every action of the window, declared once by id: its text, keys, icon and place in the menus
and the Editing toolbar.

``app.assembly`` hands :class:`ActionRegistry` one command per id; the menus, the toolbar and
Help > Keyboard shortcuts (F1) are built from these tables, so a key is bound in one place and
the F1 list is what the keys do. (napari's ``app-model`` does this with its own Qt layer over
qtpy; a table and a registry of a hundred lines do it on PySide6 alone.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Union

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QActionGroup, QIcon, QKeySequence
from PySide6.QtWidgets import QMenu, QMenuBar, QToolBar, QWidget

from .interop_menu import EXPORTS, IMPORTS

Key = Union[str, QKeySequence.StandardKey]
SK = QKeySequence.StandardKey


@dataclass(frozen=True)
class ActionSpec:
    """One action. ``icon``: a role of ``app.icons`` or a qtawesome name (with a dot);
    ``checkable`` actions hand their new state to the command, unless they are in ``group``
    (exclusive, like the tools), where the command is called without arguments."""

    id: str
    text: str
    keys: tuple[Key, ...] = ()
    icon: str | None = None
    checkable: bool = False
    group: str | None = None
    tip: str = ""
    scope: str = "window"  # where its keys work: the window, or a named widget ("canvas")


@dataclass(frozen=True)
class Submenu:
    """A submenu: of the listed items, or (no items) filled by its owner (recent files)."""

    id: str
    title: str
    items: tuple = ()


@dataclass(frozen=True)
class Slot:
    """A place in a menu or toolbar for widgets or actions made elsewhere (dock toggles, the
    toolbar's "Draw as" box)."""

    name: str


SEP = None  # a separator

# the editing tools: id suffix, label, key, icon
TOOLS = (
    ("select", "Select", "S", "fa5s.mouse-pointer"),
    ("brush", "Brush", "B", "fa5s.paint-brush"),
    ("eraser", "Eraser", "E", "fa5s.eraser"),
    ("lasso", "Lasso (draw instance)", "L", "fa5s.draw-polygon"),
    ("polygon", "Polygon (draw instance)", "P", "fa5s.vector-square"),
    ("split", "Split along a line", "K", "fa5s.cut"),
    ("fill", "Fill hole", "H", "fa5s.fill-drip"),
    ("box", "Box prompt", "D", "fa5s.magic"),
)
BOX_TIP = ("Box prompt (D): drag a box around a cell and the model draws its mask (Ctrl+Z "
           "undoes). Shift-drag gives the selected cell a new box. Faint dashed outlines are "
           "cells the model found below the score threshold: click one to accept it, Shift+A "
           "accepts all in view, Tab walks them, Enter accepts the one reached.")

SAMPLE_TIP = ("Open a bundled nuclei image with two small demo models (Cascade and PointRend, "
              "shown as their ensemble): predictions appear without any other file")

ACTIONS: tuple[ActionSpec, ...] = (
    # File
    ActionSpec("open_folder", "Open &folder…", ("Ctrl+O",), "open_folder"),
    ActionSpec("open_file", "Open &image…", ("Ctrl+Shift+O",), "open_file"),
    ActionSpec("open_coco", "Open &COCO dataset…", (), "open_coco"),
    ActionSpec("open_sample", "Open &sample", (), "sample", tip=SAMPLE_TIP),
    *(ActionSpec(f"import_{k}", text) for k, text, _ in IMPORTS),
    *(ActionSpec(f"export_{k}", text) for k, text in EXPORTS),
    ActionSpec("screenshot", "Save &screenshot…", (), "screenshot"),
    ActionSpec("quit", "&Quit", ("Ctrl+Q",), "quit"),
    # Edit
    ActionSpec("undo", "&Undo", (SK.Undo,), "undo"),
    ActionSpec("redo", "&Redo", ("Ctrl+Shift+Z", "Ctrl+Y"), "redo"),
    ActionSpec("reviewed", "Mark &reviewed", ("Ctrl+R",), "reviewed"),
    ActionSpec("delete", "Delete selected (Del)", (SK.Delete, "Backspace"), "fa5s.trash"),
    ActionSpec("merge", "Merge selected (M)", ("M",), "fa5s.object-group"),
    ActionSpec("accept", "Accept (A)", ("A",), "fa5s.check"),
    ActionSpec("reject", "Reject (X)", ("X",), "fa5s.times"),
    ActionSpec("fill_all", "Fill all holes of selected (Shift+H)", ("Shift+H",)),
    ActionSpec("next_instance", "Next instance (Tab)", ("Tab",)),
    # Shift+Tab only: X11 delivers it as Backtab and Qt matches it to Shift+Tab; a Backtab
    # binding as well made the key ambiguous there, and it did nothing
    ActionSpec("previous_instance", "Previous instance (Shift+Tab)", ("Shift+Tab",)),
    ActionSpec("next_unreviewed", "Next unreviewed image (N)", ("N",), "fa5s.forward"),
    # keys without a menu entry
    ActionSpec("bigger", "Bigger brush (])", ("]",)),
    ActionSpec("smaller", "Smaller brush ([)", ("[",)),
    # Enter on the canvas only: window-wide it took Enter from the Models panel's path fields
    ActionSpec("finish_shape", "Finish polygon (Enter)", ("Return", "Enter"), scope="canvas"),
    *(ActionSpec(f"class{k}", f"Class {k}", (str(k),)) for k in range(1, 10)),
    *(ActionSpec(f"tool_{name}", f"{label} ({key})", (key,), icon, checkable=True, group="tools",
                 tip=BOX_TIP if name == "box" else "")
      for name, label, key, icon in TOOLS),
    ActionSpec("refine", "Refine selected with PointRend (R)", ("R",), "fa5s.crosshairs",
               tip="Refine (R): PointRend predicts the selected cell's mask again inside its box "
                   "(for coarse hand drawings); Ctrl+Z restores the old mask"),
    ActionSpec("accept_candidates", "Accept candidates in view (Shift+A)", ("Shift+A",)),
    # View ("1" is a class key: 1:1 is Ctrl+1)
    ActionSpec("fit", "&Fit to window", ("F",), "fit"),
    ActionSpec("one", "&Actual size (1:1)", ("Ctrl+1",), "one_to_one"),
    ActionSpec("zoom_in", "Zoom &in", (SK.ZoomIn,), "zoom_in"),
    ActionSpec("zoom_out", "Zoom &out", (SK.ZoomOut,), "zoom_out"),
    ActionSpec("next", "&Next image", ("PgDown",), "next"),
    ActionSpec("previous", "&Previous image", ("PgUp",), "previous"),
    ActionSpec("overlay", "Show &overlay", ("O",), checkable=True),
    # Model
    ActionSpec("set_cascade", "Set &Cascade model…", (), "model"),
    ActionSpec("set_pointrend", "Set &PointRend model…", (), "model"),
    ActionSpec("run", "&Run on current image", ("Ctrl+Return",), "run"),
    ActionSpec("run_all", "Run on &all images", ("Ctrl+Shift+Return",), "run_all"),
    ActionSpec("cancel", "&Cancel", ("Escape",), "cancel"),
    # Train, Help
    ActionSpec("train", "&Fine-tune...", (), "train"),
    ActionSpec("shortcuts", "&Keyboard shortcuts", ("F1",)),
    ActionSpec("about", "&About cellseg-gui", (), "help"),
    # Project
    ActionSpec("new_project", "&New project for this folder…"),
    ActionSpec("open_project", "&Open project…"),
    ActionSpec("project_import_coco", "&Import COCO annotations…"),
    ActionSpec("project_export_coco", "Export &COCO JSON…"),
    ActionSpec("project_export_tiff", "Export &label TIFFs…"),
)

MENUS: tuple[tuple[str, tuple], ...] = (
    ("&File", ("open_folder", "open_file", "open_coco", "open_sample",
               Submenu("recent", "Open &recent"), SEP,
               Submenu("import", "&Import into project", tuple(f"import_{k}" for k, *_ in IMPORTS)),
               Submenu("export", "&Export project", tuple(f"export_{k}" for k, _ in EXPORTS)),
               SEP, "screenshot", SEP, "quit")),
    ("&Edit", ("undo", "redo", SEP, "reviewed", Submenu("classes", "Change &class"), "delete",
               "merge", "accept", "reject", "fill_all", "refine", "accept_candidates",
               "next_instance", "previous_instance", "next_unreviewed")),
    ("&View", ("fit", "one", "zoom_in", "zoom_out", SEP, "next", "previous", SEP, "overlay", SEP,
               Slot("docks"))),
    ("&Model", ("set_cascade", "set_pointrend", SEP, "run", "run_all", "cancel")),
    ("&Train", ("train",)),
    ("&Help", ("shortcuts", "about")),
    ("&Project", ("new_project", "open_project", Submenu("recent_projects", "Open &recent project"),
                  SEP, "project_import_coco", SEP, "project_export_coco", "project_export_tiff")),
)

TOOLBAR: tuple = (*(f"tool_{name}" for name, *_ in TOOLS), Slot("assist"), SEP, Slot("draw_as"),
                  SEP, "delete", "merge", "accept", "reject", "refine", "next_unreviewed",
                  "reviewed")


def make_icon(name: str | None) -> QIcon:
    if not name:
        return QIcon()
    if "." not in name:
        from .icons import icon

        return icon(name)
    try:
        import qtawesome

        return qtawesome.icon(name)
    except Exception:  # icon fonts unavailable: text-only buttons
        return QIcon()


class ActionRegistry(QObject):
    """The window's QActions by id, made from :data:`ACTIONS` with one command each.

    Args:
        window: parent of the actions; every action with keys is added to it, so its keys work
            wherever the focus is in the window (menus included).
        commands: id -> callable; a checkable action outside a group gets its new state.
        made: actions another object makes (the undo stack's Undo/Redo, which follow its
            state); the table still gives their keys and icon.
        scopes: the widgets of scoped actions by scope name; their keys work while the focus
            is in that widget.
    """

    def __init__(self, window: QWidget, commands: Mapping[str, Callable],
                 made: Mapping[str, QAction] | None = None,
                 scopes: Mapping[str, QWidget] | None = None,
                 specs: Iterable[ActionSpec] = ACTIONS) -> None:
        super().__init__(window)
        self.specs = {s.id: s for s in specs}
        missing = sorted(set(self.specs) - set(commands) - set(made or {}))
        if missing:
            raise ValueError(f"actions without a command: {', '.join(missing)}")
        self.actions: dict[str, QAction] = {}
        self.groups: dict[str, QActionGroup] = {}
        for spec in self.specs.values():
            action = (made or {}).get(spec.id) or QAction(spec.text, window)
            action.setText(spec.text)
            action.setIcon(make_icon(spec.icon))
            action.setShortcuts([QKeySequence(k) for k in spec.keys])
            action.setCheckable(spec.checkable)
            if spec.tip:
                action.setToolTip(spec.tip)
                action.setStatusTip(spec.tip)
            if spec.group:
                group = self.groups.get(spec.group) or self.groups.setdefault(
                    spec.group, QActionGroup(window))
                group.setExclusive(True)
                group.addAction(action)
            command = commands.get(spec.id)
            if command is not None and spec.checkable and not spec.group:
                action.toggled.connect(command)
            elif command is not None:
                action.triggered.connect(lambda checked=False, f=command: f())
            if spec.keys and spec.scope != "window":
                action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
                (scopes or {})[spec.scope].addAction(action)
            elif spec.keys:
                window.addAction(action)
            self.actions[spec.id] = action

    def __getitem__(self, action_id: str) -> QAction:
        return self.actions[action_id]

    def __contains__(self, action_id: str) -> bool:
        return action_id in self.actions

    def shortcut_rows(self) -> list[tuple[str, str]]:
        """(keys, action) of every action with keys, read from the live actions, sorted by
        action: Help > Keyboard shortcuts."""
        rows = {}
        for action in self.actions.values():
            keys = [k.toString(QKeySequence.SequenceFormat.NativeText) for k in action.shortcuts()]
            text = action.text().replace("&", "").rstrip("…").strip()
            if keys and text:
                rows[(", ".join(keys), text)] = None
        return sorted(rows, key=lambda r: r[1].lower())

    def fill(self, target: QMenu | QToolBar, items: Iterable, slots: Mapping[str, list],
             menus: dict[str, QMenu]) -> None:
        """Add ``items`` (action ids, SEP, Submenu, Slot) to a menu or toolbar; submenus are
        collected in ``menus`` by id."""
        for item in items:
            if item is SEP:
                target.addSeparator()
            elif isinstance(item, Submenu):
                menu = menus[item.id] = target.addMenu(item.title)
                self.fill(menu, item.items, slots, menus)
            elif isinstance(item, Slot):
                for thing in slots.get(item.name, ()):
                    (target.addAction if isinstance(thing, QAction) else target.addWidget)(thing)
            else:
                target.addAction(self.actions[item])

    def build_menus(self, bar: QMenuBar, slots: Mapping[str, list]) -> dict[str, QMenu]:
        """The menu bar of :data:`MENUS`; returns every menu and submenu by id (a top menu's
        id is its title without ``&``, lower case)."""
        menus: dict[str, QMenu] = {}
        for title, items in MENUS:
            menu = menus[title.replace("&", "").lower()] = bar.addMenu(title)
            self.fill(menu, items, slots, menus)
        return menus
