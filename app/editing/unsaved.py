"""Edits made without a project are never dropped without asking.

Without a project the window keeps each image's edited instances in memory. Creating a project
for the folder saves them into it; opening another folder or quitting asks first (Save in a new
project… / Discard / Cancel), and leaving an open project for another folder asks too.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QMessageBox

from cellseg.core.project.states import Edit, Origin
from cellseg.core.project.store import ProjectStore
from cellseg.core.review.project import project_name

from .. import file_dialogs


def unsaved(window) -> dict[str, tuple[object, bool]]:
    """``{image path: (edited Instances or None, reviewed)}`` of the window's per-image memory
    (edits and review marks made without a project)."""
    source = window.source
    if source is None:
        return {}
    return {str(Path(source.entries[i].path).resolve()): memory
            for i, memory in window.unsaved_memory().items() if 0 <= i < len(source.entries)}


def save_into(store: ProjectStore, edits: dict[str, tuple[object, bool]]) -> int:
    """Write remembered edits into a (new) project, one transaction. Returns images written."""
    written = 0
    with store.transaction():
        for path, (instances, reviewed) in edits.items():
            name = project_name(store, path)
            record = store.image_by_name(name)
            if record is None:
                continue
            if instances is not None and instances.image_size == record.image_size:
                store.add_instances(record.id, instances, Origin.EDITED)
            if reviewed:
                store.save_edit(record.id, Edit("Mark image reviewed", reviewed=(False, True)))
            written += 1
    return written


def ask(window, title: str, text: str, buttons: list[tuple[str, QMessageBox.ButtonRole]]
        ) -> str:
    """A question with named buttons; returns the chosen button's text ("" if closed)."""
    box = QMessageBox(QMessageBox.Icon.Question, title, text, QMessageBox.StandardButton.NoButton,
                      window)
    made = [box.addButton(label, role) for label, role in buttons]
    box.setDefaultButton(made[0])
    box.exec()
    clicked = box.clickedButton()
    return clicked.text() if clicked in made else ""


def may_leave(c, doing: str, next_path: str | Path | None = None) -> bool:
    """Whether the window may drop what it holds to do ``doing`` ("Quitting", "Opening X").

    Without a project, remembered edits prompt Save in a new project… / Discard / Cancel. With a
    project open (every edit already saved), opening a folder other than the project's asks to
    close it.
    """
    window = c.window
    if c.store is not None:
        if next_path is None:
            return True  # quitting: everything is in the project
        if Path(next_path).resolve() == c.store.images_dir.resolve():
            return True
        answer = ask(window, "Close the project?",
                     f"{doing} closes the project {c.store.path.name} (every edit in it is "
                     "saved).", [("Close project", QMessageBox.ButtonRole.AcceptRole),
                                 ("Cancel", QMessageBox.ButtonRole.RejectRole)])
        if answer != "Close project":
            return False
        c.close_project()
        return True
    edits = unsaved(window)
    if not edits:
        return True
    n = len(edits)
    answer = ask(window, "Unsaved edits",
                 f"{n} image{'s' if n != 1 else ''} ha{'ve' if n != 1 else 's'} edits that are "
                 f"not in a project. {doing} discards them.",
                 [("Save in a new project…", QMessageBox.ButtonRole.AcceptRole),
                  ("Discard", QMessageBox.ButtonRole.DestructiveRole),
                  ("Cancel", QMessageBox.ButtonRole.RejectRole)])
    if answer == "Discard":
        window.forget_unsaved()
        return True
    if answer != "Save in a new project…":
        return False
    path, _ = file_dialogs.get_save_file_name(window, "New project", "project.cellseg",
                                              "cellseg project (*.cellseg)")
    if not path or not c.new_project(path):
        return False
    if next_path is not None:
        c.close_project()  # saved: go on to what the user asked for
    return True
