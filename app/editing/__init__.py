"""Correcting masks in the review window: tools, undoable commands, review flow and the project.

:class:`EditingController` holds the current image's editing model, the selection, the review
filters and the project; ``app.assembly`` builds it with the window and gives it the Editing
toolbar, the Review and History docks and the Edit and Project menus (``app.actions`` declares
their actions and keys).

Keyboard-only review: Tab / Shift+Tab step through the visible instances (lowest score first),
A accepts, X rejects, Del deletes, 1-9 set the class, M merges the selection, Ctrl+R marks the
image reviewed, N jumps to the next unreviewed image; Ctrl+Z / Ctrl+Shift+Z undo and redo.
Tools: S select, B brush, E eraser ([ and ] resize), L lasso, P polygon (Enter or right click
closes), K split along a line, H fill a hole.
"""
from __future__ import annotations

from .controller import EditingController

__all__ = ["EditingController"]
