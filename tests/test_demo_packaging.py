"""The scripts that make the demo models (packaging/): held-out split, narrowed cascade start,
held-out matching. Real nuclei data and the real cascade fixture checkpoint."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch

from cellseg.core.coco.dataset import load_coco
from cellseg.core.io.image import to_uint8

PACKAGING = Path(__file__).resolve().parents[1] / "packaging"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, PACKAGING / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory, nuclei_dir):
    out = tmp_path_factory.mktemp("demo_data")
    assert _script("make_demo_data").main([str(out), "--shared", str(nuclei_dir.parents[1])]) == 0
    return out


def test_demo_data_trains_on_the_left_half_only(demo_data, nuclei_dir):
    image = to_uint8(tifffile.imread(nuclei_dir / "img2d.tif"))
    labels = tifffile.imread(nuclei_dir / "mask2d.tif")
    left, right = image[:, :256], image[:, 256:]
    train = load_coco(demo_data / "train.json")
    assert len(train.images) == 8
    seen = set()
    for img in train.images:
        pixels = cv2.imread(str(demo_data / img.file_name), cv2.IMREAD_UNCHANGED)
        # each training image is the left half turned or flipped, never a pixel of the right
        assert any(np.array_equal(pixels, np.rot90(b, k)) for b in (left, left[:, ::-1])
                   for k in range(4))
        seen.add(pixels.tobytes())
        assert len(train.instances[img.id]) == len(np.unique(labels[:, :256])) - 1
    assert len(seen) == 8  # eight different orientations, not one image eight times
    held = load_coco(demo_data / "heldout.json")
    assert np.array_equal(cv2.imread(str(demo_data / "heldout.png"), cv2.IMREAD_UNCHANGED), right)
    truth = held.instances[held.images[0].id]
    assert len(truth) == len(np.unique(labels[:, 256:])) - 1 == 57
    # a nucleus cut by the split keeps, in each half, exactly its pixels there
    assert truth.masks.areas().sum() == (labels[:, 256:] > 0).sum()


def test_cascade_start_narrows_the_heads_and_fits_the_size_budget(tmp_path, fixtures_dir):
    from cellseg.core.config import load_config
    from cellseg.core.engine.checkpoint import load_weights
    from cellseg.core.engine.meta_arch import build_model

    src = fixtures_dir / "cascade_gn_dconv" / "model_final.pth"
    dst = tmp_path / "narrow.pth"
    assert _script("cascade_start").main([str(src), str(dst), "--fc-dim", "128"]) == 0
    state = torch.load(dst, weights_only=True)["model"]
    original = torch.load(src, weights_only=True)["model"]
    for s in range(3):
        fc1 = state[f"roi_heads.box_head.{s}.fc1.weight"]
        assert fc1.shape == (128, 64 * 7 * 7)
        # kept units are rows of the original, with their outgoing columns
        rows = [int(torch.nonzero((original[f"roi_heads.box_head.{s}.fc1.weight"] == r)
                                  .all(1))[0]) for r in fc1[:5]]
        np.testing.assert_array_equal(
            state[f"roi_heads.box_predictor.{s}.bbox_pred.weight"][:, :5],
            original[f"roi_heads.box_predictor.{s}.bbox_pred.weight"][:, rows])
    cfg = load_config(fixtures_dir / "cascade_gn_dconv" / "config.yaml",
                      ["MODEL.ROI_BOX_HEAD.FC_DIM", "128"])
    model = build_model(cfg)
    load_weights(model, dst)  # every tensor fits the FC_DIM 128 model
    n = sum(p.numel() for p in model.state_dict().values() if p.is_floating_point())
    assert 2 * n < 10 * 2**20 < 2 * sum(v.numel() for v in original.values()
                                        if v.is_floating_point())


def test_cascade_start_takes_the_backbone_of_another_model(tmp_path, fixtures_dir):
    from cellseg.core.config import load_config
    from cellseg.core.engine.checkpoint import load_weights
    from cellseg.core.engine.meta_arch import build_model

    src = fixtures_dir / "cascade_gn_dconv" / "model_final.pth"
    donor_path = fixtures_dir / "pointrend" / "model_final.pth"
    dst = tmp_path / "start.pth"
    assert _script("cascade_start").main([str(src), str(dst), "--backbone-from",
                                          str(donor_path)]) == 0
    state = torch.load(dst, weights_only=True)["model"]
    donor = torch.load(donor_path, weights_only=True)["model"]
    cascade = torch.load(src, weights_only=True)["model"]
    offsets = [k for k in state if ".conv2_offset." in k]
    assert len(offsets) == 26 and all(not state[k].any() for k in offsets)
    for k in ("backbone.bottom_up.res4.0.conv2.weight", "backbone.fpn_output2.weight",
              "proposal_generator.rpn_head.conv.weight"):
        assert torch.equal(state[k], donor[k]) and not torch.equal(state[k], cascade[k])
    assert torch.equal(state["roi_heads.mask_head.mask_fcn3.weight"],
                       cascade["roi_heads.mask_head.mask_fcn3.weight"])
    cfg = load_config(fixtures_dir / "cascade_gn_dconv" / "config.yaml",
                      ["MODEL.ROI_BOX_HEAD.FC_DIM", "128"])
    load_weights(build_model(cfg), dst)
    # a donor without the cascade's layout is refused by name
    with pytest.raises(SystemExit, match="no tensor backbone"):
        _script("cascade_start").main([str(src), str(tmp_path / "x.pth"), "--backbone-from",
                                       str(fixtures_dir / "mask_rcnn" / "model_final.pth")])


def test_held_out_matching_counts_a_nucleus_once():
    match = _script("eval_demo_models").match
    iou = np.array([[0.9, 0.0], [0.8, 0.1], [0.0, 0.45]])
    scores = np.array([0.9, 0.95, 0.5], np.float32)
    # the higher-scoring duplicate takes nucleus 0; the other finds nothing free above 0.5
    assert match(iou, scores).tolist() == [False, True, False]
    assert match(iou, scores, thr=0.4).tolist() == [False, True, True]
    assert match(np.zeros((2, 0)), np.ones(2, np.float32)).tolist() == [False, False]
