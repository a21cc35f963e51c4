"""GPU checks (``pytest -m cuda``): engine parity on CUDA, TTA under a memory budget, fast
precision on CUDA, mixed-precision training, a one-GPU NCCL run through the trainer's launch
path. ``benchmarks/gpu_check.sh`` runs them on a lent GPU machine; without a GPU every test
here is skipped, saying so.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="no CUDA GPU: torch.cuda.is_available() is False"),
]

from cellseg.core.engine import load_predictor  # noqa: E402
from cellseg.core.io import read_image  # noqa: E402

from .conftest import FIXTURES  # noqa: E402
from .parity import compare, load_reference  # noqa: E402
from .test_engine_parity import CASES  # noqa: E402

# peak GPU memory one fixture model may take for TTA (8 augmented images of up to 900x1600 px
# in batches of three, features kept between the box and mask passes)
TTA_BUDGET_BYTES = 3 * 2**30
# COCO mask AP of fast (float16 backbone) predictions against exact ones as ground truth (the
# exact detections scoring >= 0.5): bfloat16 on a CPU keeps >= the bound of each model
# (benchmarks/fast_mode.py); float16 has 3 more mantissa bits, so CUDA must do at least as well.
FAST_AGREEMENT_MIN_AP = {"mask_rcnn": 80.0, "cascade_gn_dconv": 25.0, "pointrend": 80.0}

_predictors: dict = {}


def _predictor(name: str, ext: str = "pth", precision: str = "exact"):
    key = (name, ext, precision)
    if key not in _predictors:
        folder = FIXTURES / name
        _predictors[key] = load_predictor(folder / "config.yaml", folder / f"model_final.{ext}",
                                          device="cuda", precision=precision)
    return _predictors[key]


@pytest.fixture(scope="module")
def nuclei_png(fixtures_dir):
    return read_image(fixtures_dir / "nuclei.png")


def test_predictor_names_the_gpu_it_uses():
    from cellseg.core.engine import resolve_device

    predictor = _predictor("mask_rcnn")
    assert predictor.device == torch.device("cuda", torch.cuda.current_device())
    assert resolve_device("auto") == predictor.device
    last = torch.cuda.device_count() - 1
    assert resolve_device(f"cuda:{last}") == torch.device("cuda", last)


@pytest.mark.parametrize("name,ext,mode", CASES, ids=["-".join(c) for c in CASES])
def test_parity_with_upstream_on_cuda(nuclei_png, name, ext, mode):
    """The fixture README's rule as written (strict bounds, up to 1% loose) on the GPU."""
    predictor = _predictor(name, ext)
    assert predictor.model.pixel_mean.is_cuda
    out = predictor(nuclei_png, tta=mode == "tta")
    report = compare(out, load_reference(FIXTURES / name / "expected_outputs.json",
                                         f"nuclei.png|{mode}"))
    print(f"{name} {ext} {mode} on {torch.cuda.get_device_name(0)}: {report}")
    assert report.ok, str(report)


@pytest.mark.parametrize("name", ["mask_rcnn", "cascade_gn_dconv", "pointrend"])
def test_tta_under_a_memory_budget(nuclei_png, name):
    """TTA fits TTA_BUDGET_BYTES (allocations beyond it fail), and keeping features between
    its box and mask passes changes no number against recomputing them."""
    from cellseg.core.engine.tta import inference_with_tta
    from cellseg.core.io import to_model_input

    predictor = _predictor(name)
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.set_per_process_memory_fraction(min(1.0, TTA_BUDGET_BYTES / total))
    try:
        cached = predictor(nuclei_png, tta=True)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        cfg = predictor.cfg
        image = to_model_input(nuclei_png, cfg.INPUT.FORMAT)
        with torch.inference_mode():
            recomputed = inference_with_tta(
                predictor.model, image, min_sizes=list(cfg.TEST.AUG.MIN_SIZES),
                max_size=cfg.TEST.AUG.MAX_SIZE, flip=cfg.TEST.AUG.FLIP,
                num_classes=predictor.num_classes,
                nms_thresh=cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
                max_dets=cfg.TEST.DETECTIONS_PER_IMAGE, mask_on=predictor.mask_on,
                feature_cache_bytes=0)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    print(f"{name} TTA peak GPU memory {peak / 2**20:.0f} MiB "
          f"(budget {TTA_BUDGET_BYTES / 2**20:.0f} MiB)")
    assert peak <= TTA_BUDGET_BYTES
    assert len(cached) == len(recomputed) > 0
    assert np.allclose(cached.boxes, recomputed.boxes, atol=1e-3)
    assert np.allclose(cached.scores, recomputed.scores, atol=1e-5)
    # same features either way; allow a few pixels for GPU kernels' float noise
    assert np.count_nonzero(cached.masks.to_dense() != recomputed.masks.to_dense()) <= 20


def _agreement_ap(reference, predicted, min_score=0.5) -> float:
    from cellseg.core.coco.dataset import CocoImage
    from cellseg.core.coco.writer import coco_dict
    from cellseg.core.evaluation import evaluate

    ref = reference[reference.scores >= min_score]
    k = int(max(reference.classes.max(initial=0), predicted.classes.max(initial=0))) + 1
    gt = coco_dict([CocoImage(1, "image", *reference.image_size)],
                   [f"class {c + 1}" for c in range(k)], [ref])
    return evaluate(gt, {1: predicted}, iou_types=("segm",)).metrics["segm"]["AP"]


@pytest.mark.parametrize("name", ["mask_rcnn", "cascade_gn_dconv", "pointrend"])
def test_fast_precision_on_cuda_is_float16_and_close_to_exact(nuclei_png, name):
    fast = _predictor(name, precision="fast")
    assert fast.precision.dtype == torch.float16 and "float16" in fast.precision.note
    assert fast.model.backbone.bottom_up.stem.conv1.weight.dtype == torch.float16
    exact_out = _predictor(name)(nuclei_png)
    fast_out = fast(nuclei_png)
    assert fast_out.boxes.dtype == np.float32 and np.isfinite(fast_out.boxes).all()
    assert fast_out.masks is not None and len(fast_out) > 0
    ap = _agreement_ap(exact_out, fast_out)
    print(f"{name}: mask AP of fast vs exact (exact >= 0.5 as ground truth) on CUDA: {ap:.1f}")
    assert ap >= FAST_AGREEMENT_MIN_AP[name]


def test_predict_cli_fast_precision_on_cuda(nuclei_dir, tmp_path, capsys):
    from cellseg.core.cli import main

    out = tmp_path / "fast.json"
    folder = FIXTURES / "mask_rcnn"
    rc = main(["predict", "--config", str(folder / "config.yaml"), "--weights",
               str(folder / "model_final.pth"), "--device", "cuda", "--precision", "fast",
               "--out", str(out), str(nuclei_dir / "img2d.tif")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "float16" in err  # the one line saying what runs
    results = json.loads(out.read_text())
    assert len(results) > 10 and all(r["segmentation"]["size"] == [512, 512] for r in results)


# ------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def tiles(tmp_path_factory, nuclei_dir):
    import tifffile

    from .test_trainer_run import TRAIN_TILES, VAL_TILES, write_tiles

    out = tmp_path_factory.mktemp("cuda_tiles")
    image = tifffile.imread(nuclei_dir / "img2d.tif")
    labels = tifffile.imread(nuclei_dir / "mask2d.tif")
    return {"train": write_tiles(out, "train", TRAIN_TILES, image, labels),
            "val": write_tiles(out, "val", VAL_TILES, image, labels)}


def _loss_rows(out) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    return [r for r in rows if "total_loss" in r]


def test_train_20_iterations_with_amp(tiles, tmp_path, capsys):
    from cellseg.app.cli import main

    from .test_trainer_run import FAST

    out = tmp_path / "amp_run"
    folder = FIXTURES / "mask_rcnn"
    rc = main(["train", "--config", str(folder / "config.yaml"), "--weights",
               str(folder / "model_final.pth"), "--train", str(tiles["train"]),
               "--val", str(tiles["val"]), "--output", str(out), "--device", "cuda", *FAST,
               "--set", "SOLVER.MAX_ITER", "20", "--set", "SOLVER.AMP.ENABLED", "True",
               "--set", "SOLVER.BASE_LR", "0.002", "--log-period", "1"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    rows = _loss_rows(out)
    assert [r["iteration"] for r in rows] == list(range(20))
    assert all(np.isfinite(r["total_loss"]) and r["peak_memory_mb"] > 0 for r in rows)
    assert "on cuda" in captured.out
    ckpt = torch.load(out / "model_final.pth", weights_only=True, map_location="cpu")
    # the GradScaler's state is saved with the run (resume continues the loss scale)
    assert ckpt["iteration"] == 19 and "grad_scaler" in ckpt
    assert (out / "evaluation" / "final.json").is_file()
    predictor = load_predictor(out / "config.yaml", out / "model_final.pth", device="cuda")
    found = predictor(read_image(FIXTURES / "nuclei.png"))
    assert len(found) > 0 and np.isfinite(found.scores).all()


def test_one_gpu_nccl_run_through_launch(tiles, tmp_path):
    """world size 1, backend nccl: a spawned process joins an NCCL group, DDP wraps the model,
    losses are all-reduced, rank 0 writes the run folder."""
    from cellseg.trainer.distributed import launch
    from cellseg.trainer.worker import train_worker
    from cellseg.trainer.setup import prepare_run

    out = tmp_path / "nccl_run"
    folder = FIXTURES / "mask_rcnn"
    overrides = [("INPUT.MIN_SIZE_TRAIN", "(128,)"), ("INPUT.MIN_SIZE_TEST", "128"),
                 ("INPUT.CROP.ENABLED", "False"), ("SOLVER.IMS_PER_BATCH", "2"),
                 ("MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64"), ("SEED", "0"),
                 ("SOLVER.WARMUP_ITERS", "0"), ("SOLVER.MAX_ITER", "5")]
    prepared = prepare_run(folder / "config.yaml", str(tiles["train"]), out,
                           weights=str(folder / "model_final.pth"), overrides=overrides,
                           device="cuda", world_size=1, log_period=1)
    launch(train_worker, (prepared.cfg, prepared.spec), num_processes=1, backend="nccl",
           spawn=True)
    rows = _loss_rows(out)
    assert [r["iteration"] for r in rows] == list(range(5))
    assert all(np.isfinite(r["total_loss"]) for r in rows)
    assert (out / "model_final.pth").is_file()
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"


def test_estimate_on_cuda_agrees_with_training(tiles, tmp_path, capsys):
    """``--estimate`` on the GPU (CUDA synchronised) against the iteration times the same
    settings then take in a real run."""
    import statistics

    from cellseg.core.cli import main

    from .test_trainer_run import FAST

    folder = FIXTURES / "mask_rcnn"
    common = ["train", "--config", str(folder / "config.yaml"), "--weights",
              str(folder / "model_final.pth"), "--train", str(tiles["train"]), "--device",
              "cuda", *FAST, "--set", "SOLVER.MAX_ITER", "30"]
    assert main(common + ["--estimate"]) == 0
    printed = capsys.readouterr().out
    line = next(ln for ln in printed.splitlines() if ln.startswith("per iteration: "))
    assert " s on cuda -> 30 iterations" in line
    per = float(line.split()[2])
    out = tmp_path / "run"
    assert main(common + ["--output", str(out), "--log-period", "1"]) == 0
    capsys.readouterr()
    real = statistics.median(r["time"] for r in _loss_rows(out)[5:])  # after start-up
    assert 1 / 3 < per / real < 3, (per, real)
