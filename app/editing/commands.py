"""QUndoCommand wrapper of a core :class:`Edit`: the undo stack only ever swaps whole states.

Every redo and undo goes through the controller, which applies the edit to the editing model,
commits it to the project database as one transaction and refreshes the canvas, so Ctrl+Z and
Ctrl+Shift+Z are saved edits like any other.
"""
from __future__ import annotations

from PySide6.QtGui import QUndoCommand

from cellseg.core.project.states import Edit


class EditCommand(QUndoCommand):
    def __init__(self, controller, edit: Edit, already_applied: bool = False):
        super().__init__(edit.label)
        self.controller = controller
        self.edit = edit
        self._skip_first_redo = already_applied  # live brush strokes are applied as drawn

    def redo(self) -> None:
        # a refused save (read-only project, disk full) leaves the edit undone on screen too;
        # an obsolete command is dropped by the stack instead of standing for an unsaved edit
        applied = self._skip_first_redo
        self._skip_first_redo = False
        self.setObsolete(not self.controller.commit(self.edit, apply=not applied))

    def undo(self) -> None:
        self.setObsolete(not self.controller.commit(self.edit.inverse()))
