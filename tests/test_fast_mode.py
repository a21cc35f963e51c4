"""Fast precision on the CPU: the hardware rule, a fallback that says so, outputs close to exact
(the demo model on the real nuclei image and labels), and ``cellseg predict --precision``."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from cellseg.core.cli import main
from cellseg.core.engine import Predictor, load_predictor
from cellseg.core.engine.precision import cpu_bf16_flags, resolve_precision
from cellseg.core.errors import CellsegError
from cellseg.core.io import read_image
from cellseg.core.structures import CroppedMasks, Instances
from cellseg.resources import sample

CPU = torch.device("cpu")
CPUINFO_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16\n"
CPUINFO_NO_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n"
HAS_BF16 = bool(cpu_bf16_flags())
# Measured with benchmarks/fast_mode.py --models demo (the demo PointRend) on an Intel Xeon with
# avx512_bf16/amx_bf16: its fast predictions score mask AP 98.7 against its exact ones (exact
# detections >= 0.5 as ground truth), and mask AP on the nuclei labels is 54.5 vs 54.8 exact.
# The bounds leave margin.
MIN_AGREEMENT_MASK_AP = 75.0
MAX_LABEL_AP_CHANGE = 3.0


def test_precision_follows_the_hardware():
    assert resolve_precision("exact", CPU).dtype is None
    fast = resolve_precision("fast", CPU, cpuinfo=CPUINFO_BF16)
    assert fast.dtype == torch.bfloat16 and fast.name == "fast" and not fast.fell_back
    assert resolve_precision("fast", torch.device("cuda")).dtype == torch.float16
    old = resolve_precision("fast", CPU, cpuinfo=CPUINFO_NO_BF16)
    assert old.dtype is None and old.name == "exact" and old.fell_back
    assert "running exact" in old.note and "\n" not in old.note
    with pytest.raises(CellsegError, match="unknown precision 'half'"):
        resolve_precision("half", CPU)
    assert cpu_bf16_flags(CPUINFO_BF16) == ["avx512_bf16"]
    assert cpu_bf16_flags(CPUINFO_NO_BF16) == []


def demo_pointrend():
    """The shipped demo PointRend (no deformable convolutions: the whole backbone goes bf16)."""
    return next(m for m in sample().models if m.slot == "pointrend")


@pytest.fixture(scope="module")
def demo():
    m = demo_pointrend()
    exact = load_predictor(m.config, m.weights, device="cpu")
    fast = load_predictor(m.config, m.weights, device="cpu", precision="fast")
    image = read_image(sample().image)
    return exact, fast, image, exact(image), fast(image)


def _mask_ap(truth: Instances, predicted: Instances) -> float:
    from cellseg.core.coco.dataset import CocoImage
    from cellseg.core.coco.writer import coco_dict
    from cellseg.core.evaluation import evaluate

    gt = coco_dict([CocoImage(1, "image", *truth.image_size)], ["nucleus"],
                   [truth.replace(classes=np.zeros_like(truth.classes))])
    one_class = predicted.replace(classes=np.zeros_like(predicted.classes))
    return evaluate(gt, {1: one_class}, iou_types=("segm",)).metrics["segm"]["AP"]


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no avx512_bf16/amx_bf16: fast mode "
                    "runs exact here (test_fast_mode_falls_back_to_exact covers that)")
def test_fast_mode_on_cpu_is_bfloat16_and_close_to_exact(demo, nuclei_dir):
    exact, fast, image, exact_out, fast_out = demo
    assert fast.precision.dtype == torch.bfloat16 and "bfloat16" in fast.precision.note
    conv = fast.model.backbone.bottom_up.stem.conv1
    assert conv.weight.dtype == torch.bfloat16
    assert exact.model.backbone.bottom_up.stem.conv1.weight.dtype == torch.float32
    # sane Instances: float32 boxes inside the image, probabilities, masks inside their boxes
    h, w = image.shape[:2]
    assert fast_out.boxes.dtype == np.float32 and fast_out.scores.dtype == np.float32
    assert (fast_out.boxes >= 0).all() and (fast_out.boxes[:, [0, 2]] <= w).all()
    assert (fast_out.boxes[:, [1, 3]] <= h).all()
    assert ((fast_out.scores > 0) & (fast_out.scores <= 1)).all()
    assert abs(len(fast_out) - len(exact_out)) <= 0.2 * len(exact_out)
    assert not np.array_equal(fast_out.scores, exact_out.scores[:len(fast_out)])  # bf16 ran
    # close to exact: AP of fast against exact's confident detections as ground truth
    confident = exact_out[exact_out.scores >= 0.5]
    agreement = _mask_ap(confident, fast_out)
    assert agreement >= MIN_AGREEMENT_MASK_AP, agreement
    # and as good on the real labels
    labels = tifffile.imread(nuclei_dir / "mask2d.tif")
    masks, ids = CroppedMasks.from_label_image(labels)
    truth = Instances(labels.shape, masks.tight_boxes().astype(np.float32),
                      np.ones(len(ids), np.float32), np.zeros(len(ids), np.int64), masks)
    ap_exact, ap_fast = _mask_ap(truth, exact_out), _mask_ap(truth, fast_out)
    assert ap_exact > 10  # the demo model finds nuclei: the comparison means something
    assert abs(ap_fast - ap_exact) <= MAX_LABEL_AP_CHANGE, (ap_exact, ap_fast)


def test_agreement_ap_detects_moved_outputs(demo):
    """The closeness measure is not vacuous: shifted boxes and masks score far lower."""
    _, _, _, exact_out, _ = demo
    confident = exact_out[exact_out.scores >= 0.5]
    assert _mask_ap(confident, exact_out) > 95  # (not 100: low-score duplicates rank in)
    shifted = Instances(exact_out.image_size, exact_out.boxes + 4, exact_out.scores,
                        exact_out.classes,
                        CroppedMasks.from_dense(np.roll(exact_out.masks.to_dense(), 4, axis=2)))
    assert _mask_ap(confident, shifted) < MIN_AGREEMENT_MASK_AP


def test_fast_mode_falls_back_to_exact_without_bf16(demo):
    """On a CPU without bf16 instructions fast runs exact (same numbers) and says so."""
    exact, _, image, exact_out, _ = demo
    s = demo_pointrend()
    from cellseg.core.config import load_config
    from cellseg.core.engine.checkpoint import load_weights
    from cellseg.core.engine.meta_arch import build_model

    cfg = load_config(s.config)
    model = build_model(cfg)
    load_weights(model, s.weights)
    fallback = Predictor(cfg, model, CPU,
                         precision=resolve_precision("fast", CPU, cpuinfo=CPUINFO_NO_BF16))
    assert fallback.precision.fell_back and "running exact" in fallback.precision.note
    out = fallback(image)
    assert np.array_equal(out.boxes, exact_out.boxes)
    assert np.array_equal(out.scores, exact_out.scores) and out.masks == exact_out.masks


def test_predict_cli_precision_flag(tmp_path, capsys):
    s = demo_pointrend()
    out = tmp_path / "fast.json"
    rc = main(["predict", "--config", str(s.config), "--weights", str(s.weights), "--device",
               "cpu", "--precision", "fast", "--out", str(out), str(sample().image)])
    err = capsys.readouterr().err
    assert rc == 0, err
    note = err.strip().splitlines()[0]
    assert note.startswith("fast: backbone and FPN in bfloat16" if HAS_BF16 else
                           "fast precision needs a CPU with bfloat16")
    results = json.loads(out.read_text())
    assert len(results) > 50 and all(0 < r["score"] <= 1 for r in results)
    assert all(r["segmentation"]["size"] == [512, 512] for r in results)

    with pytest.raises(SystemExit) as exit_info:  # argparse: usage line and exit status 2
        main(["predict", "--config", str(s.config), "--weights", str(s.weights),
              "--precision", "half", "--out", str(out), str(sample().image)])
    assert exit_info.value.code == 2
    assert "invalid choice: 'half'" in capsys.readouterr().err
