import json
from dataclasses import FrozenInstanceError

import numpy as np
import pytest

from cellseg.core.postprocess import Settings, compose, nms, soft_nms, weighted_boxes_fusion
from cellseg.core.structures import CroppedMasks, Instances


def predictions(fixtures_dir, model, kind="plain"):
    o = json.loads((fixtures_dir / model / "expected_outputs.json").read_text())[
        f"nuclei.png|{kind}"]
    return Instances((512, 512), o["boxes"], o["scores"], o["classes"],
                     CroppedMasks.from_rle(o["masks"], (512, 512)))


@pytest.fixture(scope="module")
def raw(fixtures_dir):
    return {"cascade": predictions(fixtures_dir, "cascade_gn_dconv"),
            "pointrend": predictions(fixtures_dir, "pointrend")}


def same(a: Instances, b: Instances):
    assert a.image_size == b.image_size
    assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
    assert np.array_equal(a.classes, b.classes)
    assert (a.masks is None and b.masks is None) or a.masks == b.masks


def test_defaults_pass_one_model_through(raw):
    out = compose({"cascade": raw["cascade"]}, Settings())
    same(out, raw["cascade"])


def test_two_models_need_wbf(raw):
    with pytest.raises(ValueError, match="WBF is off"):
        compose(raw, Settings())
    with pytest.raises(ValueError, match="1 model weights for 2 models"):
        compose(raw, Settings(wbf=True, model_weights=(2.0,)))
    with pytest.raises(ValueError, match="at least one"):
        compose({}, Settings())


def test_soft_nms_step(raw):
    s = Settings(soft_nms=True, soft_nms_method="gaussian", soft_nms_sigma=0.3)
    out = compose({"cascade": raw["cascade"]}, s)
    c = raw["cascade"]
    keep, new = soft_nms(c.boxes, c.scores, c.classes, method="gaussian", sigma=0.3)
    same(out, c[keep].replace(scores=new))
    # decayed, never raised; some scores actually changed on these overlapping cells
    assert np.all(out.scores <= c.scores[keep]) and np.any(out.scores < c.scores[keep])
    on_masks = compose({"cascade": c}, Settings(soft_nms=True, soft_nms_on_masks=True))
    keep_m, new_m = soft_nms(c.boxes, c.scores, c.classes, masks=c.masks)
    same(on_masks, c[keep_m].replace(scores=new_m))


def test_hard_nms_step(raw):
    c = raw["cascade"]
    out = compose({"cascade": c}, Settings(nms_iou_threshold=0.3))
    same(out, c[nms(c.boxes, c.scores, c.classes, 0.3)])
    assert 0 < len(out) < len(c)
    # Soft-NMS wins when both are set
    both = compose({"cascade": c}, Settings(soft_nms=True, nms_iou_threshold=0.3))
    same(both, compose({"cascade": c}, Settings(soft_nms=True)))


def test_ensemble_then_threshold_and_cap(raw):
    s = Settings(soft_nms=True, wbf=True, wbf_iou_thr=0.6, wbf_conf_type="max",
                 model_weights=(2, 1), score_threshold=0.3, max_detections=40)
    out = compose(raw, s)
    per_model = [compose({k: v}, Settings(soft_nms=True)) for k, v in raw.items()]
    full = weighted_boxes_fusion(per_model, [2.0, 1.0], 0.6, 0.0, "max")
    above = full[np.flatnonzero(full.scores >= 0.3)]
    assert len(above) > 40
    top = np.sort(np.argsort(-above.scores, kind="stable")[:40])
    same(out, above[top])
    assert len(out) == 40 and out.scores.min() >= 0.3


def test_settings_are_frozen_and_validated():
    s = Settings()
    with pytest.raises(FrozenInstanceError):
        s.wbf = True
    assert Settings(model_weights=[1, 2]).model_weights == (1.0, 2.0)
    for bad in (dict(soft_nms_method="cubic"), dict(wbf_conf_type="median"),
                dict(soft_nms_sigma=0), dict(wbf_iou_thr=1.5), dict(nms_iou_threshold=-1),
                dict(model_weights=(1, 0)), dict(max_detections=-1)):
        with pytest.raises(ValueError):
            Settings(**bad)
    assert Settings(soft_nms=True).to_dict()["soft_nms"] is True


def test_soft_nms_on_masks_needs_masks(raw):
    with pytest.raises(ValueError, match="needs instances with masks"):
        compose({"c": raw["cascade"].replace(masks=None)},
                Settings(soft_nms=True, soft_nms_on_masks=True))


def test_deterministic(raw):
    s = Settings(soft_nms=True, wbf=True)
    same(compose(raw, s), compose(dict(raw), s))
