"""One scripted review of the nuclei sample, shared by the session's tests and by the test that
makes the same steps through the real window: predict with the Mask R-CNN fixture, Soft-NMS on,
score threshold 0.5 -> 0.3, a brush stroke, a delete, undo, redo, mark reviewed, reopen the
project, export COCO.

Run as a script (``python tests/review_steps.py IMAGES PROJECT OUT CONFIG WEIGHTS``) it makes
the review in a fresh interpreter and says whether anything imported Qt.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "resources" / "sample" / "nuclei.tif"
BRUSHED = 10  # the k-th instance with pixels (uid order) gets the brush stroke ...
DELETED = 20  # ... and the one found at the centre of the k-th is deleted
RADIUS = 6  # the editing tools' default brush radius
STROKE = [(0, 0), (10, 0), (20, 3), (30, 6)]  # offsets from the brushed instance's centre
SCORE = 0.3


def sample_folder(root: Path) -> Path:
    """A folder holding only the nuclei sample (a project's images folder)."""
    folder = Path(root) / "images"
    folder.mkdir(parents=True)
    shutil.copy(SAMPLE, folder / "nuclei.tif")
    return folder


def centre(ann, uid: int) -> tuple[int, int]:
    """A pixel of instance ``uid`` near its middle (image coordinates)."""
    s = ann.state(uid)
    ys, xs = np.nonzero(s.crop)
    k = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    return int(s.window[0] + xs[k]), int(s.window[1] + ys[k])


def nth(ann, k: int) -> int:
    """uid of the k-th instance with pixels (a model may predict empty masks)."""
    return int(ann.uids[ann.masks.areas() > 0][k])


def brush_target(ann) -> tuple[int, list[tuple[int, int]]]:
    """The uid the stroke paints into and the stroke's points."""
    uid = nth(ann, BRUSHED)
    x, y = centre(ann, uid)
    return uid, [(x + dx, y + dy) for dx, dy in STROKE]


def delete_target(ann) -> tuple[int, tuple[int, int]]:
    """The uid deleted and the pixel a user clicks to select it."""
    x, y = centre(ann, nth(ann, DELETED))
    return ann.instance_at(x, y), (x, y)


def session_review(session, images: Path, project: Path, out: Path, model: tuple[str, str],
                   predictor) -> None:
    """The whole review through a :class:`ReviewSession`, asserting each step."""
    assert session.open_images(images)
    session.set_predictor("cascade", predictor, *model, device="cpu")
    assert session.new_project(project, images, models=[model])
    assert session.predict() is not None
    session.update_settings(soft_nms=True)
    session.update_settings(score_threshold=SCORE)
    ann = session.annotations
    uid, points = brush_target(ann)
    stroke = session.begin_stroke(uid, RADIUS)
    for x, y in points:
        stroke.move_to(x, y)
    assert session.finish_stroke(stroke)
    gone, _ = delete_target(ann)
    assert session.delete([gone])
    assert session.undo() and gone in session.annotations
    assert session.redo() and gone not in session.annotations
    assert session.mark_reviewed(True)
    session.close_project()
    assert session.open_project(project)
    assert session.export_coco(out) is not None


if __name__ == "__main__":
    from cellseg.core.engine import load_predictor
    from cellseg.core.review import ReviewSession

    images, project, out, config, weights = (Path(a) for a in sys.argv[1:6])
    predictor = load_predictor(config, weights, device="cpu")
    session_review(ReviewSession(), images, project, out, (str(config), str(weights)), predictor)
    qt = sorted(m for m in sys.modules if m.split(".")[0] in ("PySide6", "shiboken6", "PyQt5",
                                                               "PyQt6"))
    print("qt modules:", qt)
    sys.exit(1 if qt else 0)
