"""Every editing tool driven through the real review window (mouse and keys via pytest-qt),
checked against the editing model, the undo stack and the project database."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PySide6.QtCore import QPoint, QPointF, Qt

from cellseg.core.project.exchange import create_project
from cellseg.core.project.records import Category
from cellseg.core.project.states import Origin, Review
from cellseg.core.project.store import ProjectStore


def nuclei_project(tmp_path, nuclei_dir, nuclei_instances, categories):
    """A project of the nuclei image holding the 125 nuclei as model predictions (scores
    0.3 .. 1.0), all of class 0."""
    images = tmp_path / "images"
    images.mkdir()
    (images / "img2d.tif").write_bytes((nuclei_dir / "img2d.tif").read_bytes())
    path = tmp_path / "nuclei.cellseg"
    create_project(images, path)
    inst = nuclei_instances.replace(classes=np.zeros(len(nuclei_instances), np.int64))
    with ProjectStore.open(path) as store:
        store.set_categories(categories)
        store.add_instances(store.image_by_name("img2d.tif").id, inst, Origin.MODEL)
    return path


@pytest.fixture
def project_path(tmp_path, nuclei_dir, nuclei_instances):
    return nuclei_project(tmp_path, nuclei_dir, nuclei_instances,
                          [Category(0, 1, "nucleus"), Category(1, 2, "mitotic")])


@pytest.fixture
def editing(qtbot, window, project_path):

    c = window.editing
    assert c.open_project(project_path)
    qtbot.waitUntil(lambda: c.ann is not None and c.stored and len(c.ann) == 125, timeout=10000)
    window.activateWindow()
    window.canvas.setFocus()
    return c


def view_pos(canvas, x, y) -> QPoint:
    return canvas.mapFromScene(QPointF(x + 0.5, y + 0.5))


def click(qtbot, canvas, x, y, button=Qt.MouseButton.LeftButton,
          modifier=Qt.KeyboardModifier.NoModifier):
    qtbot.mouseClick(canvas.viewport(), button, modifier, view_pos(canvas, x, y))


def drag(qtbot, canvas, points):
    vp = canvas.viewport()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=view_pos(canvas, *points[0]))
    for p in points[1:]:
        qtbot.mouseMove(vp, view_pos(canvas, *p))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=view_pos(canvas, *points[-1]))


def key(qtbot, window, k, modifier=Qt.KeyboardModifier.NoModifier):
    qtbot.keyClick(window.canvas, k, modifier)


def centre(c, uid):
    """A pixel of instance ``uid`` near its middle (image coordinates)."""
    s = c.ann.state(uid)
    ys, xs = np.nonzero(s.crop)
    k = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    return s.window[0] + xs[k], s.window[1] + ys[k]


def undo_redo_exact(qtbot, window, c, before, after):
    key(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert c.ann.same_as(before)
    key(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier
        | Qt.KeyboardModifier.ShiftModifier)
    assert c.ann.same_as(after)


def stored(c):
    with ProjectStore.open(c.store.path, read_only=True) as again:
        return again.load(c.image_id)


def test_select_delete_class_accept_reject_by_mouse_and_keys(qtbot, window, editing):
    c = editing
    uid = int(c.ann.uids[40])
    x, y = centre(c, uid)
    click(qtbot, window.canvas, x, y)
    assert c.selected == {uid}
    other = int(c.ann.uids[41])
    click(qtbot, window.canvas, *centre(c, other), modifier=Qt.KeyboardModifier.ShiftModifier)
    assert c.selected == {uid, other}
    assert sorted(window.canvas.overlay.selected) == c.selected_positions()

    for k, check in [(Qt.Key.Key_2, lambda: c.ann.state(uid).class_id == 1),
                     (Qt.Key.Key_A, lambda: c.ann.state(uid).review == Review.ACCEPTED),
                     (Qt.Key.Key_X, lambda: c.ann.state(other).review == Review.REJECTED),
                     (Qt.Key.Key_Delete, lambda: uid not in c.ann and other not in c.ann)]:
        before = c.ann.copy()
        key(qtbot, window, k)
        assert check(), k
        undo_redo_exact(qtbot, window, c, before, c.ann.copy())
        assert stored(c).same_as(c.ann)  # each step is already in the database
    assert c.store.counts(c.image_id).deleted == 2
    assert window.undo_stack.count() == 4
    assert c.window.history.model().rowCount() == 5  # "(image as opened)" + 4 edits


def test_brush_and_eraser_strokes(qtbot, window, editing):
    c = editing
    uid = int(c.ann.uids[10])
    x, y = centre(c, uid)
    click(qtbot, window.canvas, x, y)
    key(qtbot, window, Qt.Key.Key_B)
    assert window.canvas.tool is c.tools["brush"]
    key(qtbot, window, Qt.Key.Key_BracketRight)
    assert c.brush_radius > 6
    area = c.ann.state(uid).area
    before = c.ann.copy()
    drag(qtbot, window.canvas, [(x, y), (x + 10, y), (x + 20, y + 3), (x + 30, y + 6)])
    assert c.ann.state(uid).area > area
    assert c.ann.state(uid).origin == Origin.EDITED
    assert c.ann.masks.to_dense().sum(0).max() == 1  # pixels were taken from neighbours
    # the overlay shows the stroke: the pixels under the path carry the instance's label
    pos = c.selected_positions()[0]
    assert window.canvas.overlay.labels[int(y + 3), int(x + 20)] == pos + 1
    assert window.undo_stack.count() == 1  # one stroke, one command
    after = c.ann.copy()
    undo_redo_exact(qtbot, window, c, before, after)
    assert stored(c).same_as(after)

    key(qtbot, window, Qt.Key.Key_E)
    drag(qtbot, window.canvas, [(x - 2, y), (x + 25, y + 3)])
    assert c.ann.state(uid).area < after.state(uid).area
    undo_redo_exact(qtbot, window, c, after, c.ann.copy())


def test_brush_with_nothing_selected_draws_a_new_instance(qtbot, window, editing):
    c = editing
    key(qtbot, window, Qt.Key.Key_B)
    n = len(c.ann)
    drag(qtbot, window.canvas, [(140, 10), (160, 10), (160, 30)])
    assert len(c.ann) == n + 1
    new = int(c.ann.uids.max())
    assert c.ann.state(new).origin == Origin.DRAWN and c.selected == {new}
    assert stored(c).same_as(c.ann)


def test_lasso_polygon_and_fill_hole(qtbot, window, editing):
    c = editing
    n = len(c.ann)
    key(qtbot, window, Qt.Key.Key_L)
    square = [(130, 2), (170, 2), (170, 42), (130, 42), (130, 3)]
    before = c.ann.copy()
    drag(qtbot, window.canvas, square)
    assert len(c.ann) == n + 1
    lasso = int(c.ann.uids.max())
    assert c.ann.state(lasso).area > 1500
    undo_redo_exact(qtbot, window, c, before, c.ann.copy())

    # punch a hole with the eraser, then fill it by clicking into it
    key(qtbot, window, Qt.Key.Key_S)
    click(qtbot, window.canvas, 135, 10)
    assert c.selected == {lasso}
    full = c.ann.state(lasso).area
    key(qtbot, window, Qt.Key.Key_E)
    key(qtbot, window, Qt.Key.Key_BracketLeft)
    key(qtbot, window, Qt.Key.Key_BracketLeft)
    click(qtbot, window.canvas, 150, 22)
    holed = c.ann.state(lasso).area
    assert holed < full
    key(qtbot, window, Qt.Key.Key_H)
    click(qtbot, window.canvas, 150, 22)
    assert c.ann.state(lasso).area == full  # the hole was inside: filled completely
    assert window.undo_stack.undoText() == "Fill hole"

    # polygon: three clicks, closed with a right click
    key(qtbot, window, Qt.Key.Key_P)
    for p in [(200, 2), (230, 2), (215, 20)]:
        click(qtbot, window.canvas, *p)
    click(qtbot, window.canvas, 215, 20, Qt.MouseButton.RightButton)
    poly = int(c.ann.uids.max())
    assert c.ann.state(poly).origin == Origin.DRAWN and poly != lasso
    assert stored(c).same_as(c.ann)


def test_merge_and_split(qtbot, window, editing, nuclei_dir):
    c = editing
    labels = tifffile.imread(nuclei_dir / "mask2d.tif")
    h = (labels[:, :-1] != labels[:, 1:]) & (labels[:, :-1] > 0) & (labels[:, 1:] > 0)
    ys, xs = np.nonzero(h)
    a = c.ann.instance_at(xs[0], ys[0])
    b = c.ann.instance_at(xs[0] + 1, ys[0])
    assert a != b
    area = c.ann.state(a).area + c.ann.state(b).area
    click(qtbot, window.canvas, *centre(c, a))
    click(qtbot, window.canvas, *centre(c, b), modifier=Qt.KeyboardModifier.ShiftModifier)
    before = c.ann.copy()
    key(qtbot, window, Qt.Key.Key_M)
    keep = min(a, b)
    assert max(a, b) not in c.ann and c.ann.state(keep).area == area
    undo_redo_exact(qtbot, window, c, before, c.ann.copy())

    # split the merged cell again along a line through the contact point
    click(qtbot, window.canvas, *centre(c, keep))
    key(qtbot, window, Qt.Key.Key_K)
    s = c.ann.state(keep)
    x = xs[0] + 0.5
    n = len(c.ann)
    drag(qtbot, window.canvas, [(x, s.window[1] - 3), (x, (s.window[1] + s.window[3]) / 2),
                                (x, s.window[3] + 3)])
    assert len(c.ann) == n + 1
    assert stored(c).same_as(c.ann)


def test_review_flow_filters_and_reopen(qtbot, window, editing):
    c = editing
    panel = c.window.review_panel
    panel.score_limit.setValue(0.5)
    panel.low_score.setChecked(True)
    low = int((c.ann.scores < 0.5).sum())
    assert len(window.canvas.instances) == low < len(c.ann)
    # keyboard-only: Tab to the lowest-score instance, accept it
    key(qtbot, window, Qt.Key.Key_Tab)
    first = next(iter(c.selected))
    assert c.ann.scores[c.ann.index_of(first)] == c.ann.scores.min()
    key(qtbot, window, Qt.Key.Key_A)
    assert c.ann.state(first).review == Review.ACCEPTED
    assert "accepted 1" in panel.counts.text()
    panel.low_score.setChecked(False)
    assert len(window.canvas.instances) == len(c.ann)
    # mark reviewed: saved, undoable; the window's list agrees
    key(qtbot, window, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    assert c.ann.reviewed and c.store.image(c.image_id).reviewed
    assert c.store.next_unreviewed() is None
    key(qtbot, window, Qt.Key.Key_N)  # nothing left: stays, says so
    assert "every image is reviewed" in window.statusBar().currentMessage()
    key(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert not c.store.image(c.image_id).reviewed
    # reopening shows exactly what was there, without the session's undo history
    snapshot = c.ann.copy()
    path = c.store.path
    c.close_project()
    assert c.open_project(path)
    qtbot.waitUntil(lambda: c.ann is not None and c.stored, timeout=10000)
    assert c.ann.same_as(snapshot)
    assert window.undo_stack.count() == 0


def test_bad_import_in_the_app_shows_the_problem_and_changes_nothing(qtbot, window, editing,
                                                                      tmp_path):
    c = editing
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [{"id": 1, "file_name": "img2d.tif", "height": 512, "width": 512}],'
                   ' "categories": [{"id": 1, "name": "nucleus"}], "annotations": [{"id": 1, '
                   '"image_id": 7, "category_id": 1, "segmentation": [[1, 1, 5, 1, 5, 5]]}]}')
    before = c.store.path.read_bytes()
    snapshot = c.ann.copy()
    assert not c.import_coco(bad)
    assert "image_id" in window.last_error and "7" in window.last_error
    assert window.banner.isVisible()
    assert c.ann.same_as(snapshot) and stored(c).same_as(snapshot)
    assert c.store.path.read_bytes() == before


def test_editing_without_a_project_survives_window_refreshes(qtbot, window, nuclei_dir,
                                                            nuclei_instances):

    c = window.editing
    assert window.open_path(nuclei_dir / "img2d.tif")
    qtbot.waitUntil(lambda: window.image is not None, timeout=10000)
    window.set_current_instances(nuclei_instances, edited=False)  # as if a model had run
    assert c.ann is not None and len(c.ann) == 125 and c.store is None
    window.activateWindow()
    uid = int(c.ann.uids[7])
    click(qtbot, window.canvas, *centre(c, uid))
    before = c.ann.copy()
    key(qtbot, window, Qt.Key.Key_Delete)
    after = c.ann.copy()
    window.refresh()  # e.g. a post-processing change: the window re-shows its edited copy
    assert c.ann.same_as(after) and len(window.current_instances()) == 124
    undo_redo_exact(qtbot, window, c, before, after)


def test_enter_closes_a_polygon_on_the_canvas_only(qtbot, window, editing):
    # Enter (Finish polygon) was a window-wide key: in the app it took Enter from the Models
    # panel's path fields, so Enter there neither applied the pair nor ran. Fails with the
    # action's keys window-wide.
    c = editing
    key(qtbot, window, Qt.Key.Key_P)
    for p in [(200, 2), (230, 2), (215, 20)]:
        click(qtbot, window.canvas, *p)
    n = len(c.ann)
    field = window.models_panel.rows["cascade"][1].edit
    field.setFocus()
    qtbot.waitUntil(field.hasFocus)
    qtbot.keyClick(field, Qt.Key.Key_Return)
    assert len(c.ann) == n and len(c.tools["polygon"].points) == 3  # still drawing
    window.canvas.setFocus()
    qtbot.waitUntil(window.canvas.hasFocus)
    qtbot.keyClick(window.canvas.viewport(), Qt.Key.Key_Return)
    assert len(c.ann) == n + 1
    assert c.ann.state(int(c.ann.uids.max())).origin == Origin.DRAWN
