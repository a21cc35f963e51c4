"""Actions are declared once (``app.actions``) and the real window is built from the table:
menus, toolbar, keys and the F1 list agree with it, and each id runs its command."""
from __future__ import annotations

import pytest
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMenu

from cellseg.app.actions import ACTIONS, MENUS, TOOLBAR, ActionRegistry, Submenu


def _menu_actions(menu: QMenu) -> list[QAction]:
    out = []
    for a in menu.actions():
        if a.isSeparator():
            continue
        out.append(a)
        if a.menu() is not None:
            out.extend(_menu_actions(a.menu()))
    return out


def test_every_declared_action_is_in_the_window_as_declared(window):
    reg = window.registry
    placed = set()
    for _title, items in MENUS:
        stack = list(items)
        while stack:
            item = stack.pop()
            if isinstance(item, Submenu):
                stack.extend(item.items)
            elif isinstance(item, str):
                placed.add(item)
    placed |= {i for i in TOOLBAR if isinstance(i, str)}
    in_menus = {a for m in window.menuBar().actions() for a in _menu_actions(m.menu())}
    for spec in ACTIONS:
        action = reg[spec.id]
        assert action.text() == spec.text
        assert action.shortcuts() == [QKeySequence(k) for k in spec.keys], spec.id
        # a declared action is reachable: in a menu or the toolbar, or by its keys
        scope = window if spec.scope == "window" else getattr(window, spec.scope)
        assert spec.id in placed or (spec.keys and action in scope.actions()), spec.id
        if spec.id in placed and spec.id not in TOOLBAR:
            assert action in in_menus, spec.id
    # and nothing in the menu bar comes from elsewhere but dock toggles and recent entries
    declared = set(reg.actions.values())
    docks = {d.toggleViewAction() for d in window.docks.values()}
    dynamic = {window.menus[k].menuAction() for k in ("recent", "import", "export", "classes",
                                                      "recent_projects")}
    for menu_id in ("recent", "classes", "recent_projects"):
        dynamic |= set(window.menus[menu_id].actions())
    assert in_menus - declared - docks - dynamic == set()


def test_f1_lists_the_registry_keys(window, qtbot):
    window.registry["shortcuts"].trigger()
    dialog = window.shortcuts_dialog
    assert dialog is not None and dialog.isVisible()
    rows = dialog.rows()
    assert rows == window.registry.shortcut_rows()
    keys = dict((text, k) for k, text in rows)
    native = QKeySequence("Ctrl+1").toString(QKeySequence.SequenceFormat.NativeText)
    assert keys["Actual size (1:1)"] == native  # "1" is a class key
    assert keys["Brush (B)"] == "B"
    dialog.close()


def test_an_id_runs_its_command(window):
    c = window.editing
    window.registry["tool_brush"].trigger()
    assert c.active_tool is c.tools["brush"]
    assert window.registry["tool_brush"].isChecked()
    radius = c.brush_radius
    window.registry["bigger"].trigger()
    assert c.brush_radius > radius
    c.choose_tool("lasso")  # the toolbar follows a tool chosen in code
    assert window.registry["tool_lasso"].isChecked()
    assert not window.registry["tool_brush"].isChecked()


def test_registry_refuses_an_action_without_a_command(window):
    with pytest.raises(ValueError, match="open_folder"):
        ActionRegistry(window, {})
