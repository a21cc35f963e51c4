"""Issue 11: the review session gives the window's result. The same review of the nuclei sample
(Mask R-CNN fixture, Soft-NMS, threshold 0.3, a brush stroke, a delete, undo, redo, mark
reviewed, reopen the project, export COCO) is made through the real window (keys, clicks, the
brush tool, the Project actions) and through ``ReviewSession``; the two COCO files are equal."""
from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt

from cellseg.core.review import ReviewSession

from tests.review_steps import (RADIUS, SCORE, brush_target, delete_target, sample_folder,
                                session_review)
from test_editing_tools import click, key

pytestmark = pytest.mark.slow
MODEL_TIMEOUT = 180_000  # ms: CPU model runs on a shared machine


@pytest.fixture(scope="module")
def mask_rcnn(fixtures_dir) -> tuple[str, str]:
    d = fixtures_dir / "mask_rcnn"
    return str(d / "config.yaml"), str(d / "model_final.pth")


def window_review(qtbot, window, images, project, out, model) -> None:

    c = window.editing
    window.set_model("cascade", *model)
    assert c.new_project(project, images)
    qtbot.waitUntil(lambda: window.current_instances() is not None and c.ann is not None,
                    timeout=MODEL_TIMEOUT)
    assert window.post_panel.score_threshold() == 0.5  # where the session starts too
    for change in (lambda: window.post_panel.soft_nms.setChecked(True),
                   lambda: window.post_panel.set_score_threshold(SCORE)):
        before = window.current_instances()
        change()
        qtbot.waitUntil(lambda: window.current_instances() is not before, timeout=30000)
    window.activateWindow()
    window.canvas.setFocus()

    uid, points = brush_target(c.ann)
    click(qtbot, window.canvas, *points[0])
    assert c.selected == {uid}
    key(qtbot, window, Qt.Key.Key_B)
    assert c.brush_radius == RADIUS
    # the brush tool takes image coordinates from the canvas; handing them over directly
    # keeps the stroke's pixels exact (the view's mouse mapping rounds at half pixels)
    brush = c.tools["brush"]
    assert window.canvas.tool is brush
    assert brush.mouse_press(*points[0], None)
    for p in points[1:]:
        assert brush.mouse_move(*p, None)
    assert brush.mouse_release(*points[-1], None)
    assert window.undo_stack.undoText() == "Brush"

    key(qtbot, window, Qt.Key.Key_S)
    gone, at = delete_target(c.ann)
    click(qtbot, window.canvas, *at)
    assert c.selected == {gone}
    key(qtbot, window, Qt.Key.Key_Delete)
    assert gone not in c.ann
    key(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert gone in c.ann
    key(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier
        | Qt.KeyboardModifier.ShiftModifier)
    assert gone not in c.ann
    key(qtbot, window, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    assert c.ann.reviewed

    c.close_project()
    assert c.open_project(project)
    qtbot.waitUntil(lambda: c.ann is not None and c.stored and c.ann.reviewed, timeout=10000)
    assert c.export(out)


def test_window_and_session_export_the_same_coco(qtbot, window, tmp_path, mask_rcnn):
    from cellseg.core.engine import load_predictor

    by_window = tmp_path / "window" / "corrected.json"
    images = sample_folder(tmp_path / "window")
    window_review(qtbot, window, images, tmp_path / "window" / "p.cellseg", by_window, mask_rcnn)

    by_session = tmp_path / "session" / "corrected.json"
    images = sample_folder(tmp_path / "session")
    session_review(ReviewSession(), images, tmp_path / "session" / "p.cellseg", by_session,
                   mask_rcnn, load_predictor(*mask_rcnn, device="cpu"))

    window_coco, session_coco = (json.loads(p.read_text()) for p in (by_window, by_session))
    assert len(session_coco["annotations"]) > 30
    # nothing differs, not even a field that might (the files hold no dates; file names are
    # relative to each project's images folder)
    assert session_coco == window_coco
    assert by_window.read_bytes() == by_session.read_bytes()
