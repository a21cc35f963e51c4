import contextlib
import io
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cellseg.core.cli import main as cli
from cellseg.core.coco.dataset import CocoImage, load_coco
from cellseg.core.coco.writer import write_coco
from cellseg.core.errors import DataError
from cellseg.core.evaluation import evaluate
from cellseg.core.structures import CroppedMasks, Instances


@pytest.fixture(scope="module")
def gt_json(nuclei_dir, tmp_path_factory):
    """The 125 labelled nuclei as COCO ground truth (image 1, category 1 'nucleus')."""
    labels = tifffile.imread(nuclei_dir / "mask2d.tif")
    masks, _ = CroppedMasks.from_label_image(labels)
    inst = Instances(labels.shape, masks.tight_boxes(), np.ones(len(masks)),
                     np.zeros(len(masks)), masks)
    path = tmp_path_factory.mktemp("gt") / "gt.json"
    return write_coco(path, [CocoImage(1, "nuclei.png", *labels.shape)], ["nucleus"], [inst])


@pytest.fixture(scope="module")
def mask_rcnn_results(fixtures_dir, tmp_path_factory):
    """Upstream Detectron2's Mask R-CNN predictions on the nuclei, as a COCO results file."""
    o = json.loads((fixtures_dir / "mask_rcnn" / "expected_outputs.json").read_text())[
        "nuclei.png|plain"]
    inst = Instances((512, 512), o["boxes"], o["scores"], o["classes"],
                     CroppedMasks.from_rle(o["masks"], (512, 512)))
    path = tmp_path_factory.mktemp("res") / "results.json"
    path.write_text(json.dumps(inst.to_coco_results(1)))
    return path, inst


def test_ground_truth_against_itself_is_100_with_raised_max_dets(gt_json):
    result = evaluate(gt_json, gt_json)
    assert result.max_dets == 125
    for t in ("bbox", "segm"):
        m = result.metrics[t]
        assert m["AP"] == m["AP50"] == m["AP75"] == 100.0
        assert m["per_class"] == {"nucleus": 100.0}
    assert "maxDets=125" in result.table()
    # COCO's default cap of 100 would have cut 25 true nuclei
    capped = evaluate(gt_json, gt_json, max_dets=100)
    assert capped.metrics["segm"]["AP"] < 90
    assert "not counted" in capped.table()


def pycocotools_stats(gt_json, results, iou_type):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        res = json.loads(results.read_text())
        if iou_type == "segm":
            for r in res:
                r.pop("bbox")
        ev = COCOeval(gt, gt.loadRes(res), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_real_predictions_match_plain_pycocotools(gt_json, mask_rcnn_results):
    path, inst = mask_rcnn_results
    assert len(inst) > 100
    # with at most 100 detections per image our numbers are pycocotools' own summary
    top = inst[np.argsort(-inst.scores, kind="stable")[:100]]
    top_path = path.with_name("top100.json")
    top_path.write_text(json.dumps(top.to_coco_results(1)))
    result = evaluate(gt_json, top_path)
    assert result.max_dets == 100
    for t in ("bbox", "segm"):
        stats = pycocotools_stats(gt_json, top_path, t)
        got = [result.metrics[t][k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
        want = [s * 100 if s >= 0 else math.nan for s in stats[:6]]
        assert np.allclose(got, want, equal_nan=True)
        assert 0 < result.metrics[t]["AP"] < 100
    # all detections (more than 100) count once maxDets is raised: recall can only grow
    full = evaluate(gt_json, path)
    assert full.max_dets == len(inst)
    assert full.metrics["segm"]["AP50"] >= result.metrics["segm"]["AP50"]


def test_instances_mapping_and_box_only_predictions(gt_json, mask_rcnn_results):
    _, inst = mask_rcnn_results
    from_file = evaluate(gt_json, mask_rcnn_results[0])
    from_mapping = evaluate(load_coco(gt_json), {1: inst})
    # (json round trip: NaN -> null, so undefined entries compare equal)
    assert from_file.to_json() == from_mapping.to_json()
    boxes_only = evaluate(gt_json, {1: inst.replace(masks=None)})
    assert list(boxes_only.metrics) == ["bbox"]
    assert "segm not evaluated" in boxes_only.table()
    none = evaluate(gt_json, [])
    assert none.metrics["bbox"]["AP"] == 0.0


def test_bad_predictions_raise_data_error(gt_json, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 5, "category_id": 1, "bbox": [0, 0, 2, 2],
                                "score": 0.5}]))
    with pytest.raises(DataError, match="unknown image_id 5"):
        evaluate(gt_json, bad)
    bad.write_text('[{"image_id": 1,')
    with pytest.raises(DataError, match="truncated JSON"):
        evaluate(gt_json, bad)


def test_cli_prints_table_and_writes_json(gt_json, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    assert cli(["eval", "--gt", str(gt_json), "--pred", str(gt_json), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "maxDets=125" in printed and "100.00" in printed
    metrics = json.loads(out.read_text())
    assert metrics["bbox"]["AP"] == 100.0 and metrics["segm"]["AP"] == 100.0
    assert metrics["segm"]["per_class"] == {"nucleus": 100.0}
    assert metrics["bbox"]["APl"] is None  # no large nuclei: undefined, not 0
    assert metrics["bbox"]["max_dets"] == 125


def test_cli_user_error_is_one_line_exit_2(gt_json, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cellseg.core.cli", "eval", "--gt", str(gt_json),
                           "--pred", str(tmp_path / "missing.json")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "missing.json" in proc.stderr


def test_no_detections_is_zero_where_defined_and_null_where_not(nuclei_dir, tmp_path):
    # a second category with no ground truth: its AP is undefined with or without detections
    labels = tifffile.imread(nuclei_dir / "mask2d.tif")
    masks, _ = CroppedMasks.from_label_image(labels)
    inst = Instances(labels.shape, masks.tight_boxes(), np.ones(len(masks)),
                     np.zeros(len(masks)), masks)
    gt = write_coco(tmp_path / "gt.json", [CocoImage(1, "nuclei.png", *labels.shape)],
                    ["nucleus", "mitosis"], [inst])
    empty = evaluate(gt, []).to_json()
    found = evaluate(gt, gt).to_json()
    for iou_type in ("bbox", "segm"):
        m = empty[iou_type]
        assert m["AP"] == m["AP50"] == m["AP75"] == 0.0
        assert m["per_class"] == {"nucleus": 0.0, "mitosis": None}
        # exactly the size ranges that pycocotools leaves undefined when it can run
        for k in ("APs", "APm", "APl"):
            assert (m[k] is None) == (found[iou_type][k] is None), k
        assert m["APl"] is None  # no large nuclei
