
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellseg.core.postprocess import nms, soft_nms
from cellseg.core.postprocess.soft_nms import soft_nms_reference
from cellseg.core.structures import CroppedMasks


def assert_same(got, ref):
    keep, new = got
    rkeep, rnew = ref
    assert keep.dtype == np.int64 and new.dtype == np.float32
    assert keep.tolist() == rkeep.tolist()
    assert np.array_equal(new, rnew)
    assert np.all(np.diff(new) <= 0)  # pick order: non-increasing scores


@st.composite
def detections(draw, max_n=40):
    n = draw(st.integers(0, max_n))
    integer = draw(st.booleans())  # small integer grids give identical boxes and exact ties
    if integer:
        xy = draw(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12),
                                     st.integers(0, 8), st.integers(0, 8)),
                           min_size=n, max_size=n))
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in xy], np.float64).reshape(-1, 4)
        scores = np.array(draw(st.lists(st.sampled_from([0.0005, 0.1, 0.5, 0.5, 0.9, 1.0]),
                                        min_size=n, max_size=n)))
    else:
        xy = draw(st.lists(st.tuples(*[st.floats(0, 50, width=32)] * 2,
                                     *[st.floats(0, 20, width=32)] * 2),
                           min_size=n, max_size=n))
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in xy], np.float32).reshape(-1, 4)
        scores = np.array(draw(st.lists(st.floats(0, 1, width=32), min_size=n, max_size=n)),
                          np.float32)
    n_classes = draw(st.sampled_from([1, 2, 5, 40]))
    classes = np.array(draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n)),
                       np.int64)
    return boxes, scores, classes


params = st.fixed_dictionaries({
    "method": st.sampled_from(["linear", "gaussian", "hard"]),
    "sigma": st.sampled_from([0.1, 0.5, 2.0]),
    "iou_threshold": st.sampled_from([0.0, 0.3, 0.5, 0.9]),
    "score_threshold": st.sampled_from([0.0, 0.001, 0.2]),
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(detections(), params)
def test_equals_reference_on_random_and_tied_inputs(det, kw):
    boxes, scores, classes = det
    assert_same(soft_nms(boxes, scores, classes, **kw),
                soft_nms_reference(boxes, scores, classes, **kw))


@st.composite
def mask_detections(draw):
    n = draw(st.integers(0, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    dense = np.zeros((n, 16, 16), bool)
    for i in range(n):  # random rectangles, some with a cut-out, some identical
        x, y = rng.integers(0, 12, 2)
        w, h = rng.integers(1, 8, 2)
        dense[i, y:y + h, x:x + w] = True
        if rng.random() < 0.3:
            dense[i, y:y + h // 2, x:x + w // 2] = False
        if i and rng.random() < 0.2:
            dense[i] = dense[i - 1]
    masks = CroppedMasks.from_dense(dense)
    scores = rng.choice([0.3, 0.5, 0.5, 0.8, 1.0], n)
    classes = rng.integers(0, draw(st.sampled_from([1, 3])), n)
    return masks, scores, classes


@settings(max_examples=150, deadline=None)
@given(mask_detections(), params)
def test_mask_iou_variant_equals_reference(det, kw):
    masks, scores, classes = det
    boxes = masks.tight_boxes()
    assert_same(soft_nms(boxes, scores, classes, masks=masks, **kw),
                soft_nms_reference(boxes, scores, classes, masks=masks, **kw))


def test_adversarial_cases():
    empty = soft_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0))
    assert empty[0].shape == (0,) and empty[1].shape == (0,)
    # identical boxes and scores: the lowest index wins, the copies decay to 0 (linear) and go
    same = np.tile([[10, 10, 30, 30]], (5, 1))
    keep, new = soft_nms(same, np.full(5, 0.7), None, method="linear")
    assert keep.tolist() == [0] and new.tolist() == [np.float32(0.7)]
    # gaussian: copies survive with scores decayed by exp(-1/sigma) per pick
    keep, new = soft_nms(same, np.full(5, 0.7), None, method="gaussian", sigma=0.5)
    assert keep.tolist() == [0, 1, 2, 3]  # the 5th falls below 0.001: 0.7 * e^-8
    assert np.allclose(new, 0.7 * np.exp(-2.0 * np.arange(4)))
    # different classes never interact
    keep, new = soft_nms(same, np.full(5, 0.7), np.arange(5))
    assert keep.tolist() == [0, 1, 2, 3, 4] and np.all(new == np.float32(0.7))
    # a decayed box can drop below a lower-scored box it overlaps less than the pick does
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10], [30, 30, 40, 40]]
    keep, new = soft_nms(boxes, [0.9, 0.8, 0.5], None)
    assert keep.tolist() == [0, 2, 1]
    assert new[2] == np.float32(0.8 * (1 - 90 / 110))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown Soft-NMS method"):
        soft_nms([[0, 0, 1, 1]], [1.0], method="cubic")
    with pytest.raises(ValueError, match="same length"):
        soft_nms([[0, 0, 1, 1]], [1.0, 0.5])
    with pytest.raises(ValueError, match="x1 >= x0"):
        soft_nms([[5, 0, 1, 1]], [1.0])


def dense_cells(n, rng, size=1024.0):
    """Detector-like output: clusters of jittered boxes around cells, 4 classes."""
    cells = max(n // 15, 1)
    centre = rng.uniform(0, size, (cells, 2))
    radius = rng.uniform(8, 25, cells)
    k = rng.integers(0, cells, n)
    c = centre[k] + rng.normal(0, 3, (n, 2))
    half = radius[k, None] * rng.uniform(0.8, 1.2, (n, 2))
    boxes = np.concatenate([c - half, c + half], 1).clip(0, size).astype(np.float32)
    return boxes, rng.random(n).astype(np.float32), rng.integers(0, 4, n)


@pytest.mark.slow
def test_3000_boxes_identical_to_the_loop():
    # the speed-up over the loop is measured side by side by benchmarks/postprocess.py
    boxes, scores, classes = dense_cells(3000, np.random.default_rng(0))
    ref = soft_nms_reference(boxes, scores, classes)
    assert_same(soft_nms(boxes, scores, classes), ref)
    assert len(ref[0]) > 2000


def test_hard_nms_is_class_aware():
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10], [1, 0, 11, 10]]
    assert nms(boxes, [0.9, 0.8, 0.7], [0, 0, 1], 0.5).tolist() == [0, 2]
    assert nms(boxes, [0.9, 0.8, 0.7], [0, 0, 1], 0.95).tolist() == [0, 1, 2]
    assert nms(np.zeros((0, 4)), [], [], 0.5).shape == (0,)
