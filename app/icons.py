"""Icons from qtawesome, by role, so every widget uses the same glyph for the same thing."""
from __future__ import annotations

from functools import lru_cache

from PySide6.QtGui import QIcon

_NAMES = {
    "open_folder": "mdi6.folder-open", "open_file": "mdi6.file-image", "open_coco": "mdi6.code-json",
    "screenshot": "mdi6.camera", "quit": "mdi6.exit-to-app", "fit": "mdi6.fit-to-screen",
    "one_to_one": "mdi6.numeric-1-box-outline", "zoom_in": "mdi6.magnify-plus-outline",
    "zoom_out": "mdi6.magnify-minus-outline", "run": "mdi6.play", "run_all": "mdi6.fast-forward",
    "cancel": "mdi6.stop", "model": "mdi6.brain", "browse": "mdi6.dots-horizontal",
    "train": "mdi6.school", "help": "mdi6.help-circle-outline", "undo": "mdi6.undo",
    "redo": "mdi6.redo", "reviewed": "mdi6.check-circle", "predicted": "mdi6.robot",
    "edited": "mdi6.pencil", "annotated": "mdi6.tag-outline", "not_run": "mdi6.circle-outline", "running": "mdi6.timer-sand",
    "error": "mdi6.alert-circle", "next": "mdi6.chevron-right", "previous": "mdi6.chevron-left",
    "sample": "mdi6.microscope",
}
_COLOURS = {"reviewed": "#2e9e44", "predicted": "#3b7dd8", "edited": "#d08a1a", "annotated": "#3b7dd8",
            "error": "#c0392b", "not_run": "#888888", "running": "#888888"}


@lru_cache(maxsize=None)
def icon(role: str) -> QIcon:
    import qtawesome as qta

    return qta.icon(_NAMES[role], color=_COLOURS.get(role, "#404040"))
