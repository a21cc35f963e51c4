"""Masks for given boxes (Detectron2's forward_with_given_boxes) and ``cellseg predict --boxes``.

References: ``tests/fixtures/given_boxes/<model>.json``, upstream Detectron2's outputs for the
prompts in ``boxes.json`` (every nucleus of the nuclei image), made by the script beside them.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cellseg.core.engine import load_predictor
from cellseg.core.engine.given_boxes import encode, masks_for_boxes
from cellseg.core.errors import DataError
from cellseg.core.interop.box_prompts import read_box_file
from cellseg.core.io import read_image

from .conftest import REPO
from .parity import compare, load_reference

REFS = REPO / "tests" / "fixtures" / "given_boxes"
MODELS = {"mask_rcnn": 1, "cascade_gn_dconv": 4, "pointrend": 4}
_cache: dict = {}


def _model(fixtures_dir, name):
    """(predictor, encoded nuclei.png) once per model for the module."""
    if name not in _cache:
        folder = fixtures_dir / name
        predictor = load_predictor(folder / "config.yaml", folder / "model_final.pth", "cpu")
        image = read_image(fixtures_dir / "nuclei.png")
        _cache[name] = predictor, image, encode(predictor, image)
    return _cache[name]


def _prompt_file(tmp_path, classes: int):
    records = json.loads((REFS / "boxes.json").read_text())
    for r in records:
        r["category_id"] = min(r["category_id"], classes)
    path = tmp_path / f"boxes{classes}.json"
    path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize("name", list(MODELS))
def test_masks_for_given_boxes_match_upstream(fixtures_dir, tmp_path, name):
    predictor, _, encoded = _model(fixtures_dir, name)
    prompts = read_box_file(_prompt_file(tmp_path, MODELS[name])).anywhere
    out = masks_for_boxes(predictor, encoded, prompts.boxes, prompts.classes, prompts.scores)
    ref = load_reference(REFS / f"{name}.json", "nuclei.png|given_boxes")
    assert len(ref["boxes"]) == len(prompts.boxes) == 125
    report = compare(out, ref)
    assert report.ok, str(report)
    assert report.strict >= 0.98 * report.n_reference, str(report)
    np.testing.assert_array_equal(out.scores, prompts.scores)  # carried through


@pytest.mark.parametrize("name", list(MODELS))
def test_the_models_own_boxes_give_back_its_own_masks(fixtures_dir, name):
    predictor, image, encoded = _model(fixtures_dir, name)
    own = predictor(image)
    top = own[np.flatnonzero(own.scores >= 0.3)]
    again = masks_for_boxes(predictor, encoded, top.boxes, top.classes, top.scores)
    assert len(again) == len(top) > 0
    same = [again.masks[i] == top.masks[i] for i in range(len(top))]
    assert np.mean(same) >= 0.98
    np.testing.assert_allclose(again.boxes, top.boxes, atol=1e-3)


def test_without_classes_the_box_head_chooses(fixtures_dir):
    predictor, image, encoded = _model(fixtures_dir, "pointrend")
    own = predictor(image)
    top = own[np.flatnonzero(own.scores >= 0.3)]
    chosen = masks_for_boxes(predictor, encoded, top.boxes)
    assert (chosen.classes == top.classes).mean() >= 0.9
    assert (chosen.scores == 1.0).all()


def test_box_files_of_every_shape(tmp_path):
    results = [{"image_id": 3, "file_name": "dir/a.png", "bbox": [1, 2, 3, 4],
                "category_id": 2, "score": 0.7}, {"image_id": 4, "bbox": [0, 0, 5, 5],
                                                  "category_id": 1, "score": 0.2}]
    (tmp_path / "r.json").write_text(json.dumps(results))
    f = read_box_file(tmp_path / "r.json")
    a = f.for_image("a.png", 99)
    assert a.boxes.tolist() == [[1, 2, 4, 6]] and a.classes.tolist() == [1]
    assert f.for_image("b.png", 4).scores.tolist() == [pytest.approx(0.2)]
    assert len(f.for_image("c.png", 5).boxes) == 0
    coco = {"images": [{"id": 1, "file_name": "x.tif", "height": 9, "width": 9}],
            "categories": [{"id": 7, "name": "a"}, {"id": 3, "name": "b"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [0, 0, 2, 2]}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    got = read_box_file(tmp_path / "c.json").for_image("x.tif", 1)
    assert got.classes.tolist() == [1] and got.scores.tolist() == [1.0]  # ids in order: 3, 7
    (tmp_path / "l.json").write_text(json.dumps([{"bbox": [0, 0, 1, 1]}]))
    assert read_box_file(tmp_path / "l.json").anywhere.classes is None
    for bad in ([{"bbox": [0, 0, -1, 1]}], [{"bbox": [0, 0, 1, 1], "category_id": 1},
                                             {"bbox": [0, 0, 1, 1]}], {"images": []}):
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(DataError, match="cannot read boxes from"):
            read_box_file(tmp_path / "bad.json")


@pytest.mark.slow
def test_cli_predict_boxes(fixtures_dir, tmp_path):
    folder = fixtures_dir / "pointrend"
    cmd = [sys.executable, "-m", "cellseg.core.cli", "predict", str(fixtures_dir / "nuclei.png"),
           "--config", str(folder / "config.yaml"), "--weights", str(folder / "model_final.pth"),
           "--device", "cpu", "--out", str(tmp_path / "out.json"), "--boxes"]
    run = subprocess.run(cmd + [str(_prompt_file(tmp_path, 4))], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    records = json.loads((tmp_path / "out.json").read_text())
    predictor, _, encoded = _model(fixtures_dir, "pointrend")
    prompts = read_box_file(_prompt_file(tmp_path, 4)).anywhere
    core = masks_for_boxes(predictor, encoded, prompts.boxes, prompts.classes, prompts.scores)
    assert [r["segmentation"]["counts"] for r in records] == [
        r["counts"] for r in core.masks.to_rle()]
    assert [r["category_id"] for r in records] == (prompts.classes + 1).tolist()
    too_many = json.loads((REFS / "boxes.json").read_text())
    too_many[0]["category_id"] = 9
    (tmp_path / "nine.json").write_text(json.dumps(too_many))
    run = subprocess.run(cmd + [str(tmp_path / "nine.json")], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 2 and "category_id 9 but the model has 4 classes" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
