"""Observing and stopping a prediction (core/progress.py) on the real fixture models."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from cellseg.core.engine import PredictionCancelled, load_predictor
from cellseg.core.progress import (BACKBONE, BOX_HEAD, MASK_HEAD, PROPOSALS, SUBDIVISION,
                                          TTA_PASS, checkpoint, monitored)
from cellseg.core.io import read_image

# the fixture models at a small test size, with six TTA sizes and flips: 12 augmented images,
# 4 batches of 3, so 4 box passes and 4 mask passes
SMALL = ["INPUT.MIN_SIZE_TEST", "256", "INPUT.MAX_SIZE_TEST", "512",
         "TEST.AUG.MIN_SIZES", "(160, 192, 224, 256, 288, 320)", "TEST.AUG.MAX_SIZE", "512"]
PASSES = 8

_predictors: dict = {}


def _predictor(fixtures_dir, name):
    if name not in _predictors:
        folder = fixtures_dir / name
        _predictors[name] = load_predictor(folder / "config.yaml", folder / "model_final.pth",
                                           device="cpu", overrides=SMALL)
    return _predictors[name]


@pytest.fixture(scope="module")
def nuclei_png(fixtures_dir):
    return read_image(fixtures_dir / "nuclei.png")


@pytest.fixture(scope="module")
def unobserved_tta(fixtures_dir, nuclei_png):
    """The plain call's TTA result and how long it took."""
    predictor = _predictor(fixtures_dir, "mask_rcnn")
    predictor(nuclei_png)  # warm up (first-call allocations) outside the timing
    start = time.perf_counter()
    result = predictor(nuclei_png, tta=True)
    return result, time.perf_counter() - start


def same(a, b) -> bool:
    return (np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
            and np.array_equal(a.classes, b.classes) and a.masks == b.masks)


def test_tta_reports_every_pass_in_order_and_gives_the_same_result(fixtures_dir, nuclei_png,
                                                                    unobserved_tta):
    predictor = _predictor(fixtures_dir, "mask_rcnn")
    steps = []
    observed = predictor(nuclei_png, tta=True, progress=lambda *step: steps.append(step))
    passes = [(done, total) for stage, done, total in steps if stage == TTA_PASS]
    assert passes == [(k, PASSES) for k in range(PASSES + 1)]
    # each box pass runs backbone, proposals and the box head; mask passes reuse the features
    first_pass = steps[1:steps.index((TTA_PASS, 1, PASSES))]
    assert first_pass == [(BACKBONE, 1, 1), (PROPOSALS, 1, 1), (BOX_HEAD, 1, 1)]
    n = steps[-2][2]  # the mask head's layers, each a stage
    assert steps[-n - 1:] == [(MASK_HEAD, k, n) for k in range(1, n + 1)] + [
        (TTA_PASS, PASSES, PASSES)]
    assert same(observed, unobserved_tta[0])  # observing changes nothing
    assert len(observed) > 0


# mask layers: MODEL.ROI_MASK_HEAD.NUM_CONV convs, the deconv, its ReLU and the predictor
@pytest.mark.parametrize("name,box_stages,mask_layers", [
    ("mask_rcnn", 1, 4 + 3), ("cascade_gn_dconv", 3, 8 + 3), ("pointrend", 1, None)])
def test_each_engine_stage_is_reported(fixtures_dir, nuclei_png, name, box_stages, mask_layers):
    predictor = _predictor(fixtures_dir, name)
    steps = []
    predictor(nuclei_png, progress=lambda *step: steps.append(step))
    head = [(BACKBONE, 1, 1), (PROPOSALS, 1, 1)]
    boxes = [(BOX_HEAD, k, box_stages) for k in range(1, box_stages + 1)]
    points = [s for s in steps if s[0] == SUBDIVISION]
    if mask_layers is None:  # the coarse head, then every PointRend subdivision step, in order
        n = points[0][2]
        assert n > 1 and points == [(SUBDIVISION, k, n) for k in range(1, n + 1)]
        assert steps == head + boxes + [(MASK_HEAD, 1, 1)] + points
    else:  # each layer of the Mask R-CNN head
        assert points == []
        assert steps == head + boxes + [(MASK_HEAD, k, mask_layers)
                                        for k in range(1, mask_layers + 1)]


@pytest.mark.parametrize("k", [0, 1, 5])
def test_stopping_at_tta_pass_k_raises_there_and_is_quick(fixtures_dir, nuclei_png,
                                                          unobserved_tta, k):
    predictor = _predictor(fixtures_dir, "mask_rcnn")
    full = unobserved_tta[1]

    steps, asked = [], threading.Event()

    def progress(stage, done, total):
        steps.append((stage, done, total))
        if stage == TTA_PASS and done == k:
            asked.set()

    start = time.perf_counter()
    with pytest.raises(PredictionCancelled):
        predictor(nuclei_png, tta=True, progress=progress, stop=asked.is_set)
    stopped = time.perf_counter() - start
    assert steps[-1] == (TTA_PASS, k, PASSES)  # nothing ran after the pass it was asked at
    if k < PASSES // 2:  # the 4 box passes do nearly all the work: the rest is saved
        assert stopped < full * (k + 1.5) / 4, (stopped, full)


def test_stop_from_another_thread_ends_at_the_next_stage(fixtures_dir, nuclei_png):
    """The app's case: the GUI thread sets the event while the model thread computes."""
    predictor = _predictor(fixtures_dir, "cascade_gn_dconv")
    stop = threading.Event()
    steps = []

    def progress(*step):
        steps.append(step)
        if step == (BOX_HEAD, 1, 3):  # "another thread" asks while stage 2 runs
            threading.Thread(target=stop.set).start()
            time.sleep(0.2)

    with pytest.raises(PredictionCancelled):
        predictor(nuclei_png, progress=progress, stop=stop.is_set)
    assert steps[-1][0] == BOX_HEAD and steps[-1][1] in (1, 2)
    assert not any(s[0] == MASK_HEAD for s in steps)


def test_a_stop_already_set_ends_before_any_work_and_unobserved_checkpoints_do_nothing(
        fixtures_dir, nuclei_png):
    predictor = _predictor(fixtures_dir, "mask_rcnn")
    steps = []
    with pytest.raises(PredictionCancelled):
        predictor(nuclei_png, progress=lambda *s: steps.append(s), stop=lambda: True)
    assert steps == []
    checkpoint(TTA_PASS, 1, 2)  # outside monitored(): a no-op, as in every plain prediction
    with monitored(progress=lambda *s: steps.append(s)):
        checkpoint(BACKBONE)
    checkpoint(BACKBONE)  # the monitor is gone again
    assert steps == [(BACKBONE, 1, 1)]
