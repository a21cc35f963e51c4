"""The review session without Qt: the whole review of the nuclei sample with the Mask R-CNN
fixture, then focused tests of its events, undo/redo, the reviewed flag, reopening a project and
refused writes. Real image, real checkpoint, real SQLite project."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cellseg.core.postprocess.pipeline import Settings, compose
from cellseg.core.project.edits import delete
from cellseg.core.project.states import EditError, Origin, Review
from cellseg.core.project.store import ProjectStore
from cellseg.core.review import ImageState, ReviewSession, ReviewSettings

from .review_steps import (REPO, SCORE, brush_target, delete_target, sample_folder,
                           session_review)


@pytest.fixture(scope="module")
def mask_rcnn(fixtures_dir) -> tuple[str, str]:
    d = fixtures_dir / "mask_rcnn"
    return str(d / "config.yaml"), str(d / "model_final.pth")


class Counting:
    """The real predictor, counting its runs (to tell a re-compose from a model run)."""

    def __init__(self, predictor) -> None:
        self.predictor, self.calls = predictor, []

    def __call__(self, image, tta=False):
        self.calls.append(tta)
        return self.predictor(image, tta=tta)


@pytest.fixture(scope="module")
def loaded(mask_rcnn):
    from cellseg.core.engine import load_predictor

    return load_predictor(*mask_rcnn, device="cpu")


@pytest.fixture
def predictor(loaded):
    return Counting(loaded)


@pytest.fixture
def images(tmp_path):
    return sample_folder(tmp_path)


def record(session) -> list[tuple]:
    """Every event the session fires, in order, as (name, *args)."""
    events: list[tuple] = []
    for name in ("images_changed", "current_changed", "state_changed", "settings_changed",
                 "annotations_changed", "history_changed", "project_changed", "error"):
        getattr(session, name).connect(lambda *args, _n=name: events.append((_n, *args)))
    return events


def predicted(images, predictor, mask_rcnn, project=None):
    s = ReviewSession()
    assert s.open_images(images)
    s.set_predictor("cascade", predictor, *mask_rcnn, device="cpu")
    if project is not None:
        assert s.new_project(project, images, models=[mask_rcnn])
    assert s.predict() is not None
    return s


# ---------------------------------------------------------------------- the whole review
def test_whole_review_without_qt(tmp_path, images, predictor, mask_rcnn):
    s = ReviewSession()
    events = record(s)
    out = tmp_path / "corrected.json"
    session_review(s, images, tmp_path / "p.cellseg", out, mask_rcnn, predictor)
    assert predictor.calls == [False]  # one model run; every settings change re-composed
    assert not [e for e in events if e[0] == "error"]
    assert s.state(0) == ImageState.REVIEWED
    # the export is what the steps say: the composed result of the final settings, with one
    # instance brushed and one deleted
    raw = s.outputs.get(s.raw_keys(0)[0])
    want = compose({"cascade": raw}, Settings(soft_nms=True, score_threshold=SCORE))
    data = json.loads(out.read_text())
    assert [im["file_name"] for im in data["images"]] == ["nuclei.tif"]
    ann = s.annotations
    assert ann.reviewed and (ann.origins == Origin.EDITED).sum() >= 1  # brushed (+ neighbours)
    # exported: every cell (not rejected, not empty) of the reopened project's annotations
    assert len(data["annotations"]) == s.info(0).cells == (ann.masks.areas() > 0).sum()
    with ProjectStore.open(s.store.path, read_only=True) as again:
        image_id = again.images()[0].id
        assert again.load(image_id).same_as(ann)
        # the delete, and the neighbours the stroke painted over completely (overlap rule)
        assert again.counts(image_id).deleted == len(want) - len(ann) >= 1


def test_the_session_never_imports_qt(tmp_path, images, mask_rcnn):
    # a fresh interpreter (pytest-qt has Qt loaded in this one) makes the whole review
    out = tmp_path / "out.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, str(REPO / "tests" / "review_steps.py"), str(images),
                          str(tmp_path / "p.cellseg"), str(out), *mask_rcnn],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "qt modules: []" in run.stdout
    assert json.loads(out.read_text())["annotations"]


# ---------------------------------------------------------------------- events
def test_events_of_open_predict_and_settings(images, predictor, mask_rcnn):
    s = ReviewSession()
    events = record(s)
    assert s.open_images(images)
    assert events[:3] == [("images_changed",), ("history_changed",), ("current_changed", 0)]
    assert s.state(0) == ImageState.NOT_RUN and s.annotations is None
    s.set_predictor("cascade", predictor, *mask_rcnn, device="cpu")
    del events[:]
    shown = s.predict()
    assert events == [("state_changed", 0, ImageState.RUNNING), ("annotations_changed", 0),
                      ("state_changed", 0, ImageState.PREDICTED)]
    assert s.info(0).cells == len(shown) and len(s.annotations) == len(shown)
    assert (shown.scores >= 0.5).all()  # the panel's starting threshold

    del events[:]
    s.update_settings(soft_nms=True)  # re-composed from the cache: no model run
    assert events == [("settings_changed", s.settings), ("annotations_changed", 0)]
    assert predictor.calls == [False]
    raw = s.outputs.get(s.raw_keys(0)[0])
    assert s.annotations.to_instances().scores.tolist() == \
        compose({"cascade": raw}, Settings(soft_nms=True, score_threshold=0.5)).scores.tolist()

    del events[:]
    s.set_settings(s.settings)  # the same value: nothing happens
    assert events == []
    s.update_settings(tta=True)  # TTA needs a run: nothing to show until predict
    assert s.annotations is None and s.composed(0) is None
    assert ("annotations_changed", 0) in events
    s.predict()
    assert predictor.calls == [False, True] and s.annotations is not None
    s.update_settings(tta=False)  # back: the plain output is still cached
    assert predictor.calls == [False, True] and s.annotations is not None


def test_a_failing_run_and_a_bad_folder_report_errors(tmp_path, images, mask_rcnn):
    s = ReviewSession()
    events = record(s)
    assert not s.open_images(tmp_path / "nowhere")
    assert events[-1][0] == "error" and "nowhere" in events[-1][1]
    assert s.open_images(images)
    assert s.predict() is None  # no model set
    assert s.state(0) == ImageState.ERROR and "no cascade model" in events[-1][1]

    def broken(image, tta=False):
        raise RuntimeError("the model fell over")

    s.set_predictor("cascade", broken, *mask_rcnn)
    assert s.predict() is None
    assert s.info(0).message == "RuntimeError: the model fell over"
    assert events[-1] == ("error", "nuclei.tif: RuntimeError: the model fell over")


# ---------------------------------------------------------------------- editing
def test_edits_undo_redo_exact_with_events(images, predictor, mask_rcnn):
    s = predicted(images, predictor, mask_rcnn)
    events = record(s)
    ann = s.annotations
    start = ann.copy()
    uid, points = brush_target(ann)
    stroke = s.begin_stroke(uid, 6)
    for p in points:
        stroke.move_to(*p)
    assert events == []  # live dabs fire nothing; the finished stroke is one edit
    assert s.finish_stroke(stroke)
    assert events == [("annotations_changed", 0), ("history_changed",),
                      ("state_changed", 0, ImageState.EDITED)]
    brushed = ann.copy()
    assert ann.state(uid).area > start.state(uid).area
    assert s.history.labels() == ["Brush"] and s.can_undo and not s.can_redo

    gone, _ = delete_target(ann)
    assert s.delete([gone]) and gone not in ann
    deleted = ann.copy()
    assert s.undo() and ann.same_as(brushed)
    assert s.undo() and ann.same_as(start) and not s.can_undo and s.can_redo
    assert s.redo() and ann.same_as(brushed)
    assert s.redo() and ann.same_as(deleted) and not s.can_redo
    assert not s.redo() and not s.apply(delete(ann, []))  # nothing to redo; a no-op edit
    with pytest.raises(EditError):
        s.delete([10 ** 9])
    # a settings change no longer replaces the edited annotations
    s.update_settings(score_threshold=0.2)
    assert s.annotations is ann and ann.same_as(deleted)
    # another image's history: none (this folder has one image; reselecting is a no-op)
    s.select(0)
    assert s.can_undo


def test_edits_without_a_project_go_into_a_new_one(tmp_path, images, predictor, mask_rcnn):
    s = predicted(images, predictor, mask_rcnn)
    ann = s.annotations
    gone, _ = delete_target(ann)
    s.delete([gone])
    s.set_review([int(ann.uids[0])], Review.ACCEPTED)
    s.mark_reviewed()
    kept = ann.copy()
    assert s.new_project(tmp_path / "p.cellseg", images)
    again = s.annotations
    assert again is not ann and s.state(0) == ImageState.REVIEWED
    assert np.array_equal(again.uids, kept.uids) and again.reviewed
    assert np.array_equal(again.reviews, kept.reviews)
    assert again.masks == kept.masks


def test_reviewed_flag_undo_and_reopen(tmp_path, images, predictor, mask_rcnn):
    project = tmp_path / "p.cellseg"
    s = predicted(images, predictor, mask_rcnn, project)
    assert s.state(0) == ImageState.PREDICTED
    assert s.mark_reviewed() and s.state(0) == ImageState.REVIEWED
    assert s.history.labels() == ["Mark image reviewed"]
    assert s.undo() and s.state(0) == ImageState.EDITED and not s.annotations.reviewed
    assert s.redo() and s.state(0) == ImageState.REVIEWED
    s.set_class([int(s.annotations.uids[3])], 1)
    shown = s.annotations.copy()
    s.close_project()
    assert s.store is None and s.state(0) == ImageState.PREDICTED  # the model's result again
    events = record(s)
    assert s.open_project(project)
    assert ("project_changed", s.store) in events
    assert s.state(0) == ImageState.REVIEWED and s.annotations.same_as(shown)
    assert not s.can_undo  # a reopened project starts a fresh history
    assert s.info(0).cells == (shown.masks.areas() > 0).sum()  # empty masks are no cells


def test_a_refused_write_is_taken_back_and_reported(tmp_path, images, predictor, mask_rcnn):
    s = predicted(images, predictor, mask_rcnn, tmp_path / "p.cellseg")
    ann = s.annotations
    uid0 = int(ann.uids[0])
    s.delete([uid0])
    saved = ann.copy()
    events = record(s)
    # a program that ignores the project lock deletes the journal: nothing more may be written
    os.unlink(f"{s.store.path}-wal")
    uid, points = brush_target(ann)
    stroke = s.begin_stroke(uid, 6)
    for p in points:
        stroke.move_to(*p)
    assert not ann.same_as(saved)  # painted live ...
    assert not s.finish_stroke(stroke)
    assert ann.same_as(saved)  # ... and taken back when the project refused it
    assert [e[0] for e in events] == ["annotations_changed", "error"]
    assert "journal" in events[-1][1] and "NOT saved" in events[-1][1]
    assert not s.delete([int(ann.uids[1])]) and ann.same_as(saved)
    assert not s.undo() and ann.same_as(saved) and s.can_undo  # still undoable later
    assert s.history.labels() == [f"Delete instance {uid0}"]


def test_settings_value():
    settings = ReviewSettings()
    assert settings.score_threshold == 0.5 and settings.models == ("cascade",)
    assert ReviewSettings(model="ensemble").pipeline().wbf
    assert ReviewSettings(model="ensemble").models == ("cascade", "pointrend")
    assert ReviewSettings(tta=True).needs_runs_after(settings)
    assert not ReviewSettings(soft_nms=True).needs_runs_after(settings)
    with pytest.raises(ValueError):
        ReviewSettings(model="yolo")
    with pytest.raises(ValueError):
        ReviewSettings(score_threshold=2)


def test_two_images_keep_their_edits_and_states(tmp_path, loaded, mask_rcnn):
    import tifffile

    from .review_steps import SAMPLE

    folder = tmp_path / "crops"
    folder.mkdir()
    image = tifffile.imread(SAMPLE)
    for name, (y, x) in (("a", (0, 0)), ("b", (200, 200))):
        tifffile.imwrite(folder / f"{name}.tif", image[y:y + 256, x:x + 256])
    s = ReviewSession()
    assert s.open_images(folder) and len(s) == 2 and s.index == 0
    s.set_predictor("cascade", loaded, *mask_rcnn, device="cpu")
    s.update_settings(score_threshold=0.3)
    s.predict()
    ann = s.annotations
    gone, _ = delete_target(ann) if len(ann) > 20 else (int(ann.uids[0]), None)
    s.delete([gone])
    kept = ann.copy()
    events = record(s)
    s.select(1)
    assert events[:2] == [("current_changed", 1), ("history_changed",)]
    assert s.annotations is None and not s.can_undo and s.state(1) == ImageState.NOT_RUN
    assert s.predict() is not None and s.state(1) == ImageState.PREDICTED
    s.select(0)  # back: the edited annotations, not a fresh prediction
    assert s.annotations is ann and ann.same_as(kept) and s.state(0) == ImageState.EDITED
    s.update_settings(soft_nms=True)  # the edited image keeps its edits ...
    assert s.annotations is ann and ann.same_as(kept)
    s.select(1)  # ... the other one follows the settings
    assert s.composed(1) is not None and s.state(1) == ImageState.PREDICTED
    assert len(s.annotations) == len(s.composed(1))
