import json
import warnings

import numpy as np
import pytest
from ensemble_boxes import weighted_boxes_fusion as package_wbf
from hypothesis import given, settings
from hypothesis import strategies as st

from cellseg.core.postprocess import weighted_boxes_fusion
from cellseg.core.postprocess.mask_fusion import paste_windows
from cellseg.core.postprocess.box_fusion import CONF_TYPES, fuse_boxes
from cellseg.core.structures import CroppedMasks, Instances


def fixture_predictions(fixtures_dir, model, kind="plain"):
    out = json.loads((fixtures_dir / model / "expected_outputs.json").read_text())
    o = out[f"nuclei.png|{kind}"]
    return Instances((512, 512), o["boxes"], o["scores"], o["classes"],
                     CroppedMasks.from_rle(o["masks"], (512, 512)))


@pytest.fixture(scope="module")
def cascade(fixtures_dir):
    return fixture_predictions(fixtures_dir, "cascade_gn_dconv")


@pytest.fixture(scope="module")
def pointrend(fixtures_dir):
    return fixture_predictions(fixtures_dir, "pointrend")


@pytest.fixture(scope="module")
def engine_output(fixtures_dir):
    """A real engine run (Mask R-CNN fixture on nuclei.png): masks plus float16 mask_probs."""
    from cellseg.core.engine.predictor import load_predictor
    from cellseg.core.io.image import read_image

    d = fixtures_dir / "mask_rcnn"
    predictor = load_predictor(d / "config.yaml", d / "model_final.pth", device="cpu")
    inst = predictor(read_image(fixtures_dir / "nuclei.png"))
    assert inst.mask_probs is not None and len(inst) > 100
    return inst


def package(models, size, **kw):
    h, w = size
    scale = np.array([w, h, w, h], np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return package_wbf([m.boxes.astype(np.float64) / scale for m in models],
                           [m.scores for m in models], [m.classes for m in models], **kw)


@pytest.mark.parametrize("conf_type", CONF_TYPES)
def test_boxes_equal_the_ensemble_boxes_package(cascade, pointrend, conf_type):
    kw = dict(weights=[2.0, 1.0], iou_thr=0.5, skip_box_thr=0.1, conf_type=conf_type)
    fused = weighted_boxes_fusion([cascade, pointrend], **kw)
    boxes, scores, labels = package([cascade, pointrend], (512, 512), **kw)
    assert len(fused) == len(boxes) > 300
    assert np.array_equal(fused.scores, scores.astype(np.float32))
    assert np.array_equal(fused.classes, labels.astype(np.int64))
    assert np.array_equal(fused.boxes, (boxes * 512).astype(np.float32))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 3), st.sampled_from(CONF_TYPES),
       st.sampled_from([0.3, 0.55, 0.8]))
def test_boxes_equal_the_package_on_random_detections(seed, n_models, conf_type, iou_thr):
    rng = np.random.default_rng(seed)
    size = (int(rng.integers(20, 200)), int(rng.integers(20, 200)))
    models = []
    for _ in range(n_models):
        n = int(rng.integers(0, 30))
        xy = rng.integers(-5, 200, (n, 2)).astype(np.float32)  # some outside: clipped
        wh = rng.integers(0, 40, (n, 2)).astype(np.float32)  # some zero-area: dropped
        scores = rng.choice([0.2, 0.5, 0.5, 0.9, rng.random()], n)
        models.append(Instances(size, np.concatenate([xy, xy + wh], 1), scores,
                                rng.integers(0, 3, n)))
    weights = list(rng.uniform(0.5, 2, n_models))
    fusion = fuse_boxes([m.boxes for m in models], [m.scores for m in models],
                        [m.classes for m in models], size, weights, iou_thr, 0.1, conf_type)
    boxes, scores, labels = package(models, size, weights=weights, iou_thr=iou_thr,
                                    skip_box_thr=0.1, conf_type=conf_type)
    h, w = size
    assert np.array_equal(fusion.scores, scores.astype(np.float32))
    assert np.array_equal(fusion.labels, labels.astype(np.int64))
    assert np.array_equal(fusion.boxes, (boxes * [w, h, w, h]).astype(np.float32))
    # every detection that passed the filter is a member of exactly one cluster of its label
    assert len(fusion.member_model) == len(set(zip(fusion.member_model.tolist(),
                                                   fusion.member_index.tolist())))
    owner = np.repeat(np.arange(len(fusion)), np.diff(fusion.starts))
    member_labels = np.array([models[t].classes[i] for t, i in
                              zip(fusion.member_model, fusion.member_index)], np.int64)
    assert np.array_equal(member_labels, fusion.labels[owner])


def assert_self_ensemble(inst):
    fused = weighted_boxes_fusion([inst, inst])
    assert len(fused) == len(inst)
    # fused output is sorted by score like the package (ties in any order): pair each fused
    # detection with the original of its class whose box and score are nearest (one-to-one;
    # class-agnostic cascade boxes repeat across classes)
    dist = (np.abs(fused.boxes[:, None] - inst.boxes[None]).sum(-1)
            + np.abs(fused.scores[:, None] - inst.scores[None])
            + 1e6 * (fused.classes[:, None] != inst.classes[None]))
    match = dist.argmin(1)
    assert sorted(match.tolist()) == list(range(len(inst)))
    ref = inst[match]
    assert np.array_equal(fused.classes, ref.classes)
    assert np.allclose(fused.scores, ref.scores, rtol=1e-6, atol=0)
    scale = np.abs(ref.boxes).max()
    assert np.abs(fused.boxes - ref.boxes).max() <= 1e-4 * scale
    assert fused.masks == ref.masks  # pixel-identical


def test_ensembling_a_model_with_itself_returns_its_predictions(cascade):
    assert_self_ensemble(cascade)


def test_self_ensemble_with_real_engine_mask_probs(engine_output):
    # the fused masks come from the float16 probabilities: still identical to the engine's
    assert_self_ensemble(engine_output)
    # a lone detection keeps its own mask too (one-member clusters)
    far = engine_output[:5]
    fused = weighted_boxes_fusion([far, Instances.empty(far.image_size)])
    order = np.argsort(-far.scores, kind="stable")
    assert fused.masks == far.masks[order]


@pytest.fixture(scope="module")
def engine_flipped(fixtures_dir, engine_output):
    """The same model on the mirrored image, mapped back: a real flip-TTA variant."""
    from cellseg.core.engine.predictor import load_predictor
    from cellseg.core.io.image import read_image

    d = fixtures_dir / "mask_rcnn"
    predictor = load_predictor(d / "config.yaml", d / "model_final.pth", device="cpu")
    image = read_image(fixtures_dir / "nuclei.png")
    out = predictor(np.ascontiguousarray(image[:, ::-1]))
    w = image.shape[1]
    b = out.boxes
    return Instances(out.image_size, np.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1),
                     out.scores, out.classes,
                     CroppedMasks.from_dense(out.masks.to_dense()[:, :, ::-1]),
                     np.ascontiguousarray(out.mask_probs[:, :, ::-1]))


def centroids(masks):
    inst, ys, xs = masks.pixel_coordinates()
    n = len(masks)
    area = np.maximum(np.bincount(inst, minlength=n), 1)
    return np.stack([np.bincount(inst, xs + 0.5, n) / area, np.bincount(inst, ys + 0.5, n) / area], 1)


def test_fused_masks_follow_fused_boxes(engine_output, engine_flipped):
    models = [engine_output, engine_flipped]
    fusion = fuse_boxes([m.boxes for m in models], [m.scores for m in models],
                        [m.classes for m in models], (512, 512))
    fused = weighted_boxes_fusion(models)
    assert np.array_equal(fused.boxes, fusion.boxes)
    # clusters where the plain and the flipped prediction were fused
    multi = (np.diff(fusion.starts) == 2) & (fused.masks.areas() > 0)
    assert multi.sum() > 50
    centre = (fused.boxes[:, :2] + fused.boxes[:, 2:]) / 2
    ours = np.linalg.norm(centroids(fused.masks) - centre, axis=1)[multi]
    # the research approach: the mask of the original detection nearest to the fused box
    originals = Instances.cat(models)
    nearest = np.argmax(box_iou(fused.boxes, originals.boxes), axis=1)
    theirs = np.linalg.norm(centroids(originals.masks[nearest]) - centre, axis=1)[multi]
    assert ours.mean() < 0.85 * theirs.mean()
    assert (ours < theirs).mean() > 0.6
    # each fused mask lies within its members' paste windows
    windows = paste_windows(fused.boxes, (512, 512))
    tight = fused.masks.tight_boxes()
    has = fused.masks.areas() > 0
    assert ((tight[has, :2] >= windows[has, :2] - 2) & (tight[has, 2:] <= windows[has, 2:] + 2)).all()


def box_iou(a, b):
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-9)


def test_mask_vote_is_score_weighted():
    size = (40, 40)
    boxes = [[5, 5, 25, 25], [7, 5, 27, 25], [9, 5, 29, 25]]
    scores = [0.45, 0.35, 0.2]  # they sum to 1: the normalised weights
    dense = np.zeros((3, 40, 40), bool)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        dense[k, y0:y1, x0:x1] = True
    models = [Instances(size, [boxes[k]], [scores[k]], [0],
                        CroppedMasks.from_dense(dense[k:k + 1])) for k in range(3)]
    fused = weighted_boxes_fusion(models, iou_thr=0.5, conf_type="max")
    assert len(fused) == 1
    assert np.allclose(fused.boxes[0], [6.5, 5, 26.5, 25], atol=1e-4)
    # columns 5-6: A only (0.45, out); 7-24: A+B or all (in); 25-26: B+C (0.55, in);
    # 27-28: C only (0.2, out): the majority mask moved with the box
    expected = np.zeros((40, 40), bool)
    expected[5:25, 7:27] = True
    assert np.array_equal(fused.masks.to_dense()[0], expected)


def test_soft_masks_are_pasted_bilinearly_and_averaged():
    size = (30, 30)
    probs = np.zeros((2, 4, 4), np.float16)
    probs[:, 1:3, 1:3] = 1.0
    boxes = np.array([[4, 4, 20, 20], [4, 4, 20, 20]], np.float32)
    # the second model is less sure everywhere
    probs[1] *= np.float16(0.6)
    masks = CroppedMasks.from_dense(np.zeros((1, 30, 30), bool))
    a = Instances(size, boxes[:1], [0.8], [0], masks, probs[:1])
    b = Instances(size, boxes[1:], [0.8], [0], masks, probs[1:])
    fused = weighted_boxes_fusion([a, b])
    # members say "nothing" in their binary masks: clamped below 0.5, fused mask empty
    assert fused.masks.areas().tolist() == [0]
    full = CroppedMasks.from_dense(np.pad(np.ones((1, 8, 8), bool), ((0, 0), (8, 14), (8, 14))))
    a = a.replace(masks=full)
    b = b.replace(masks=full)
    fused = weighted_boxes_fusion([a, b])
    # inside both binary masks: clamped to >= 0.5, so the pixels stay; outside they go
    assert fused.masks == full


def test_box_only_models_fuse_boxes_only(cascade, pointrend):
    fused = weighted_boxes_fusion([cascade.replace(masks=None), pointrend])
    assert fused.masks is None and len(fused) > 0
    empty = weighted_boxes_fusion([Instances.empty((512, 512)), Instances.empty((512, 512))])
    assert len(empty) == 0 and empty.masks is not None


def test_bad_arguments(cascade):
    with pytest.raises(ValueError, match="conf_type"):
        weighted_boxes_fusion([cascade, cascade], conf_type="median")
    with pytest.raises(ValueError, match="1 model weights for 2 models"):
        weighted_boxes_fusion([cascade, cascade], weights=[1.0])
    with pytest.raises(ValueError, match="same image size"):
        weighted_boxes_fusion([cascade, Instances.empty((10, 10))])
