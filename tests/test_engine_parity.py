"""Parity of the engine with upstream Detectron2's outputs on the fixture models (CPU)."""
from __future__ import annotations

import numpy as np
import pytest

from cellseg.core.engine import load_predictor
from cellseg.core.io import read_image, to_model_input

from .parity import compare, load_reference

CASES = [
    ("mask_rcnn", "pth", "plain"),
    ("mask_rcnn", "pkl", "plain"),
    ("mask_rcnn", "pth", "tta"),
    ("cascade_gn_dconv", "pth", "plain"),
    ("cascade_gn_dconv", "pth", "tta"),
    ("pointrend", "pth", "plain"),
    ("pointrend", "pth", "tta"),
]

_predictors: dict = {}


def _predictor(fixtures_dir, name, ext):
    key = (name, ext)
    if key not in _predictors:
        folder = fixtures_dir / name
        _predictors[key] = load_predictor(folder / "config.yaml", folder / f"model_final.{ext}",
                                          device="cpu")
    return _predictors[key]


@pytest.fixture(scope="module")
def nuclei_png(fixtures_dir):
    return read_image(fixtures_dir / "nuclei.png")


@pytest.mark.parametrize("name,ext,mode", CASES, ids=["-".join(c) for c in CASES])
def test_parity_with_upstream(fixtures_dir, nuclei_png, name, ext, mode):
    predictor = _predictor(fixtures_dir, name, ext)
    out = predictor(nuclei_png, tta=mode == "tta")
    ref = load_reference(fixtures_dir / name / "expected_outputs.json", f"nuclei.png|{mode}")
    report = compare(out, ref)
    assert report.ok, str(report)
    # the rule's loose bounds are for float noise only: nearly everything must be strict
    assert report.strict >= 0.98 * report.n_reference, str(report)


def test_parity_helper_detects_a_wrong_prediction(fixtures_dir, nuclei_png):
    """The comparison must fail when predictions are perturbed: it is not vacuous."""
    out = _predictor(fixtures_dir, "mask_rcnn", "pth")(nuclei_png)
    ref = load_reference(fixtures_dir / "mask_rcnn" / "expected_outputs.json", "nuclei.png|plain")
    shifted = out.replace(boxes=out.boxes + np.float32(1.0))
    assert not compare(shifted, ref).ok
    top = int(np.argmax(out.scores))
    assert not compare(out[np.arange(len(out)) != top], ref).ok  # a missing confident cell
    rescored = out.replace(scores=out.scores * np.float32(0.9))
    assert not compare(rescored, ref).ok


def test_sixteen_bit_tiff_follows_the_conversion_rule(fixtures_dir, nuclei_dir):
    """The fixtures' nuclei.png is the 16-bit img2d.tif converted by the documented rule."""
    tif = read_image(nuclei_dir / "img2d.tif")
    png = read_image(fixtures_dir / "nuclei.png")
    assert tif.dtype == np.uint16 and png.dtype == np.uint8
    assert np.array_equal(to_model_input(tif, "BGR"), to_model_input(png, "BGR"))
    predictor = _predictor(fixtures_dir, "mask_rcnn", "pth")
    a, b = predictor(tif), predictor(png)
    assert np.array_equal(a.boxes, b.boxes) and a.masks == b.masks
