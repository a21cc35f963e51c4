"""`cellseg predict` end to end, and its one-line errors for bad input."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

from cellseg.core.cli import main


def _model_args(fixtures_dir, name="mask_rcnn", ext="pth"):
    folder = fixtures_dir / name
    return ["--config", str(folder / "config.yaml"), "--weights", str(folder / f"model_final.{ext}")]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1]


def test_predict_writes_coco_results(fixtures_dir, nuclei_dir, tmp_path):
    out = tmp_path / "results.json"
    rc = main(["predict", *_model_args(fixtures_dir), "--out", str(out),
               str(nuclei_dir / "img2d.tif"), "--detections-per-image", "150"])
    assert rc == 0
    results = json.loads(out.read_text())
    assert 100 < len(results) <= 150  # the override raised the cap above upstream's 100 default
    r = results[0]
    assert r["image_id"] == 1 and r["file_name"] == "img2d.tif" and r["category_id"] == 1
    x, y, w, h = r["bbox"]
    mask = mask_util.decode(r["segmentation"])
    assert mask.shape == (512, 512) and mask.any()
    ys, xs = np.nonzero(mask)
    assert x - 1 <= xs.min() and xs.max() <= x + w + 1 and y - 1 <= ys.min() <= ys.max() <= y + h + 1
    scores = [q["score"] for q in results]
    assert scores == sorted(scores, reverse=True)


def _malicious_pickle(path, marker):
    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(path, "wb") as f:
        pickle.dump({"model": {"w": Exploit()}}, f)


BAD_INPUTS = ["missing-image", "corrupt-image", "missing-config", "unknown-key", "wrong-type",
              "other-architecture", "malicious-pth", "malicious-pkl", "not-a-checkpoint"]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_and_nonzero(case, fixtures_dir, nuclei_dir, tmp_path, capsys):
    image = str(nuclei_dir / "img2d.tif")
    args = _model_args(fixtures_dir)
    marker = tmp_path / "pwned"
    expect = {}
    if case == "missing-image":
        image, expect = str(tmp_path / "nope.tif"), "image not found"
    elif case == "corrupt-image":
        bad = tmp_path / "bad.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
        image, expect = str(bad), "cannot decode image"
    elif case == "missing-config":
        args[1], expect = str(tmp_path / "none.yaml"), "none.yaml"
    elif case in ("unknown-key", "wrong-type"):
        cfg = tmp_path / "config.yaml"
        text = (fixtures_dir / "mask_rcnn" / "config.yaml").read_text()
        if case == "unknown-key":
            text = text.replace("  MASK_ON: true", "  MASK_ON: true\n  MASK_ONN: true")
            expect = "MODEL.MASK_ONN"
        else:
            text = text.replace("    NUM_CLASSES: 1\n", "    NUM_CLASSES: one\n")
            expect = "MODEL.ROI_HEADS.NUM_CLASSES"
        cfg.write_text(text)
        args[1] = str(cfg)
    elif case == "other-architecture":
        args[3] = str(fixtures_dir / "cascade_gn_dconv" / "model_final.pth")
        expect = "does not fit"
    elif case == "malicious-pth":
        bad = tmp_path / "model.pth"
        _malicious_pickle(bad, marker)
        args[3], expect = str(bad), "refusing to load"
    elif case == "malicious-pkl":
        bad = tmp_path / "model.pkl"
        _malicious_pickle(bad, marker)
        args[3], expect = str(bad), "refusing to load"
    elif case == "not-a-checkpoint":
        bad = tmp_path / "model.pth"
        bad.write_text("hello")
        args[3], expect = str(bad), "cannot read checkpoint"
    rc = main(["predict", *args, "--out", str(tmp_path / "r.json"), image])
    line = _error_line(capsys)
    assert rc == 2
    assert line.startswith("cellseg predict: error:") and expect in line, line
    assert not marker.exists(), "the malicious pickle ran code"
    assert not (tmp_path / "r.json").exists()


def test_control_the_malicious_pickle_does_run_code_when_unpickled_unsafely(tmp_path):
    """Shows the payload above is real: a plain unpickler executes it."""
    marker = tmp_path / "pwned"
    _malicious_pickle(tmp_path / "x.pkl", marker)
    with open(tmp_path / "x.pkl", "rb") as f:
        pickle.load(f)
    assert marker.exists()


def test_cli_exit_status_from_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cellseg.core.cli", "predict", "--config",
                           str(tmp_path / "c.yaml"), "--weights", str(tmp_path / "w.pth"),
                           "--out", str(tmp_path / "o.json"), str(tmp_path / "i.png")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "error" in proc.stderr


def test_cuda_request_without_gpu_is_a_clear_error(fixtures_dir, nuclei_dir, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the cuda path is exercised by the parity tests there")
    rc = main(["predict", *_model_args(fixtures_dir), "--device", "cuda", "--out",
               str(tmp_path / "r.json"), str(nuclei_dir / "img2d.tif")])
    assert rc == 2 and "no CUDA GPU" in _error_line(capsys)


def test_predict_ensemble_with_soft_nms_matches_core_pipeline(fixtures_dir, nuclei_dir, tmp_path):
    """--model x2 --wbf --soft-nms writes exactly what core's pipeline composes."""
    from cellseg.core.engine import load_predictor
    from cellseg.core.io import read_image
    from cellseg.core.postprocess.pipeline import Settings, compose

    models = [(fixtures_dir / n / "config.yaml", fixtures_dir / n / "model_final.pth")
              for n in ("cascade_gn_dconv", "pointrend")]
    image = read_image(nuclei_dir / "img2d.tif")
    raw = {f"model{i}": load_predictor(c, w, "cpu")(image) for i, (c, w) in enumerate(models)}
    expected = compose(raw, Settings(soft_nms=True, wbf=True, score_threshold=0.2))
    out = tmp_path / "ens.json"
    args = ["predict", "--wbf", "--soft-nms", "--score-threshold", "0.2", "--out", str(out),
            str(nuclei_dir / "img2d.tif")]
    for c, w in models:
        args += ["--model", str(c), str(w)]
    assert main(args) == 0
    results = json.loads(out.read_text())
    assert len(results) == len(expected) > 0
    assert np.allclose([r["score"] for r in results], expected.scores)
    assert all(r["score"] >= 0.2 for r in results)
    assert [r["segmentation"]["counts"] for r in results] == [
        m["counts"] for m in expected.masks.to_rle()]


def test_several_models_need_wbf(fixtures_dir, nuclei_dir, tmp_path, capsys):
    c, w = _model_args(fixtures_dir)[1], _model_args(fixtures_dir)[3]
    rc = main(["predict", "--model", c, w, "--model", c, w, "--out", str(tmp_path / "r.json"),
               str(nuclei_dir / "img2d.tif")])
    assert rc == 2 and "--wbf" in _error_line(capsys)


def test_predictor_keeps_the_full_device(fixtures_dir):
    from cellseg.core.engine import load_predictor, resolve_device
    from cellseg.core.errors import CellsegError

    d = fixtures_dir / "mask_rcnn"
    predictor = load_predictor(d / "config.yaml", d / "model_final.pth", "cpu")
    assert predictor.device == torch.device("cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    # one past the last GPU (cuda:0 on a machine without any) is refused, naming what exists
    with pytest.raises(CellsegError, match=f"cuda:{count}'"):
        resolve_device(f"cuda:{count}")
    with pytest.raises(CellsegError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    if count:  # auto and a bare "cuda" name the GPU actually used
        assert resolve_device("auto") == torch.device("cuda", torch.cuda.current_device())
        assert resolve_device(f"cuda:{count - 1}").index == count - 1
    else:
        assert resolve_device("auto") == torch.device("cpu")
