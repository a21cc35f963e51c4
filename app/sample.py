"""File > Open sample (and ``cellseg-gui --sample``): the bundled nuclei image with its demo models.

A newcomer has neither data nor a model; the sample gives both, so the first start ends with
cells segmented on screen, by the two-model review this app is about: the demo Cascade Mask
R-CNN and PointRend go in their slots and the WBF ensemble of both is shown (with one demo
model, that model). They are used for this session only: the model paths the user saved in the
settings are left as they were (they come back at the next start, or through the Model menu).
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QTimer

from cellseg.core.errors import CellsegError

def use_model_for_session(window, key: str, config: str | Path, weights: str | Path) -> None:
    """Show and use a model in slot ``key`` without writing it to the user's settings."""
    window.models_panel.set_model_paths(key, str(config), str(weights), emit=False)
    window.service.set_model(key, str(config), str(weights))
    window.service.clear_failures()


def open_sample(window, root: str | Path | None = None) -> bool:
    """Open the sample image and, when the build ships them, predict with the demo models.

    ``root``: another folder laid out like ``resources/sample`` (default: the bundled one)."""
    from cellseg.resources import sample

    try:
        s = sample(root)
    except CellsegError as exc:
        window.show_error(str(exc))
        return False
    for m in s.models:
        use_model_for_session(window, m.slot, m.config, m.weights)
    if s.has_model:
        window.post_panel.set_model_choice(
            "ensemble" if len(s.models) > 1 else s.models[0].slot)
    if not window.open_path(s.image):
        return False
    window.setWindowTitle("cellseg-gui — sample: nuclei (2018 Data Science Bowl, via StarDist)")
    if not s.has_model:
        def notice(_index=None) -> None:
            window.image_shown.disconnect(notice)
            # after the window's own "set the model" hint, which follows image_shown
            QTimer.singleShot(0, lambda: window.statusBar().showMessage(
                "sample image opened; this build has no demo model: set a model in the Models "
                "panel", 15000))

        window.image_shown.connect(notice)
    return True
