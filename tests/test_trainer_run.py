"""`cellseg train` end to end on the real nuclei image with the Detectron2 fixture models (CPU).

Images are 128 px tiles of the nuclei image and MIN_SIZE_TRAIN is 128, so an iteration takes
a fraction of a second; each test still runs the real CLI, writes a real run folder and reads
it back.
"""
from __future__ import annotations

import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from cellseg.app.cli import main as cli_main
from cellseg.core.coco.dataset import CocoImage, load_coco
from cellseg.core.coco.writer import write_coco
from cellseg.core.structures import CroppedMasks, Instances

from tests.conftest import FIXTURES
TILE = 128
TRAIN_TILES = [(0, 0), (0, 128), (128, 0), (128, 128)]
VAL_TILES = [(256, 256)]
# small, fast and deterministic: one training size, no crop, small ROI batches
FAST = ["--set", "INPUT.MIN_SIZE_TRAIN", "(128,)", "--set", "INPUT.MIN_SIZE_TEST", "128",
        "--set", "INPUT.CROP.ENABLED", "False", "--set", "SOLVER.IMS_PER_BATCH", "2",
        "--set", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64", "--set", "SEED", "0",
        "--set", "SOLVER.WARMUP_ITERS", "0"]


def write_tiles(out: Path, name: str, tiles, image: np.ndarray, labels: np.ndarray,
                classes_of=None, category_names=("nucleus",)) -> Path:
    """COCO file + TIFF tiles cut from the nuclei image (the layout the app exports)."""
    out.mkdir(parents=True, exist_ok=True)
    images, instances = [], []
    for i, (y, x) in enumerate(tiles):
        fn = f"{name}_{i}.tif"
        tifffile.imwrite(out / fn, image[y:y + TILE, x:x + TILE])
        masks, _ = CroppedMasks.from_label_image(labels[y:y + TILE, x:x + TILE])
        cls = (np.zeros(len(masks), np.int64) if classes_of is None
               else classes_of(masks).astype(np.int64))
        images.append(CocoImage(i + 1, fn, TILE, TILE))
        instances.append(Instances((TILE, TILE), masks.tight_boxes().astype(np.float32),
                                   np.ones(len(masks), np.float32), cls, masks))
    return write_coco(out / f"{name}.json", images, list(category_names), instances)


@pytest.fixture(scope="module")
def tiles(tmp_path_factory, nuclei_dir):
    out = tmp_path_factory.mktemp("nuclei_tiles")
    image = tifffile.imread(nuclei_dir / "img2d.tif")
    labels = tifffile.imread(nuclei_dir / "mask2d.tif")
    train = write_tiles(out, "train", TRAIN_TILES, image, labels)
    val = write_tiles(out, "val", VAL_TILES, image, labels)
    return {"train": train, "val": val, "dir": out, "image": image, "labels": labels}


def run_train(capsys, model: str, tiles, out: Path, *extra, weights=True, val=True):
    argv = ["train", "--config", str(FIXTURES / model / "config.yaml"),
            "--train", str(tiles["train"]), "--output", str(out), "--device", "cpu", *FAST]
    if weights:
        argv += ["--weights", str(FIXTURES / model / "model_final.pth")]
    if val:
        argv += ["--val", str(tiles["val"])]
    rc = cli_main(argv + list(extra))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]


def loss_rows(out: Path) -> list[dict]:
    return [r for r in metrics(out) if "total_loss" in r]


# ---------------------------------------------------------------------------------------------
def test_loss_falls_and_checkpoint_predicts(capsys, tiles, tmp_path):
    out = tmp_path / "run"
    # every tile in every batch: the curve then shows learning rather than which tiles came up
    rc, stdout, err = run_train(capsys, "mask_rcnn", tiles, out, "--set", "SOLVER.MAX_ITER", "24",
                                "--set", "SOLVER.IMS_PER_BATCH", "4",
                                "--set", "SOLVER.BASE_LR", "0.002", "--set",
                                "SOLVER.CHECKPOINT_PERIOD", "10", "--log-period", "1",
                                "--eval-initial")
    assert rc == 0, err
    rows = loss_rows(out)
    assert [r["iteration"] for r in rows] == list(range(24))
    for r in rows:
        for key in ("loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask",
                    "lr", "time", "data_time", "peak_memory_mb", "eta_seconds"):
            assert key in r and np.isfinite(r[key]), key
    first = np.median([r["total_loss"] for r in rows[:6]])
    last = np.median([r["total_loss"] for r in rows[-6:]])
    assert last < 0.85 * first, (first, last)
    # run folder as Detectron2 leaves it
    for name in ("config.yaml", "model_0000009.pth", "model_0000019.pth", "model_final.pth",
                 "evaluation/initial.json", "evaluation/final.json", "plots/losses.png",
                 "plots/lr.png", "plots/ap.png", "plots/memory.png", "plots/time.png"):
        assert (out / name).is_file(), name
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    ckpt = torch.load(out / "model_final.pth", weights_only=True)
    assert ckpt["iteration"] == 23 and {"model", "optimizer", "scheduler"} <= set(ckpt)
    final = json.loads((out / "evaluation/final.json").read_text())
    for t in ("bbox", "segm"):
        assert {"AP", "AP50", "AP75", "AP-nucleus"} <= set(final[t])
    ap_rows = [r for r in metrics(out) if "segm/AP" in r]
    assert ap_rows and ap_rows[-1]["iteration"] == 23
    assert "per category AP: nucleus" in stdout and "iter 24/24" in stdout

    # the checkpoint loads back through the engine's one entry point and finds nuclei
    from cellseg.core.engine import predictor as engine_predictor
    from cellseg.core.io import read_image

    pred = engine_predictor.load_predictor(out / "config.yaml", out / "model_final.pth", "cpu")
    image = read_image(tiles["dir"] / "val_0.tif")
    inst = pred(image)
    assert inst.image_size == (TILE, TILE)
    assert len(inst) > 5 and inst.masks is not None and (inst.scores > 0.5).sum() >= 3
    # and the saved weights really changed from the starting point
    start = torch.load(FIXTURES / "mask_rcnn" / "model_final.pth", weights_only=True)["model"]
    w = "roi_heads.box_predictor.cls_score.weight"
    assert not torch.equal(ckpt["model"][w], start[w])


def test_resume_continues_at_the_right_iteration(capsys, tiles, tmp_path):
    out = tmp_path / "run"
    common = ["--set", "SOLVER.CHECKPOINT_PERIOD", "3", "--log-period", "1"]
    rc, _, err = run_train(capsys, "mask_rcnn", tiles, out, "--set", "SOLVER.MAX_ITER", "4",
                           *common, val=False)
    assert rc == 0, err
    assert (out / "model_0000002.pth").is_file()
    # the same run, longer: --resume continues after model_final (iteration 3)
    rc, stdout, err = run_train(capsys, "mask_rcnn", tiles, out, "--set", "SOLVER.MAX_ITER", "7",
                                "--resume", *common, val=False)
    assert rc == 0, err
    assert "resuming from model_final.pth at iteration 4" in stdout
    assert [r["iteration"] for r in loss_rows(out)] == list(range(7))
    ckpt = torch.load(out / "model_final.pth", weights_only=True)
    assert ckpt["iteration"] == 6
    assert ckpt["scheduler"]["last_epoch"] == 7  # one scheduler step per iteration, restored
    assert "momentum_buffer" in next(iter(ckpt["optimizer"]["state"].values()))
    # nothing left to do
    rc, stdout, _ = run_train(capsys, "mask_rcnn", tiles, out, "--set", "SOLVER.MAX_ITER", "7",
                              "--resume", *common, val=False)
    assert rc == 0 and "nothing to do" in stdout


def test_nan_loss_stops_with_a_clear_message(capsys, tiles, tmp_path):
    out = tmp_path / "run"
    rc, _, err = run_train(capsys, "mask_rcnn", tiles, out, "--set", "SOLVER.MAX_ITER", "20",
                           "--set", "SOLVER.BASE_LR", "1e6", val=False, weights=False)
    assert rc == 2
    line = err.strip().splitlines()[-1]
    assert line.startswith("cellseg train: error: ")
    assert "diverged" in line and "SOLVER.BASE_LR" in line and "iteration" in line
    assert not (out / "model_final.pth").exists()


def test_fine_tune_four_class_models_on_one_class_data(capsys, tiles, tmp_path):
    """Cascade (GN, deformable convs) and PointRend: the class-specific layers are
    re-initialised for 1 class and listed; the deformable convs' weights train on CPU."""
    for model, reinit in (("cascade_gn_dconv", ["roi_heads.box_predictor.0.cls_score.weight",
                                                 "roi_heads.mask_head.predictor.weight"]),
                          ("pointrend", ["roi_heads.mask_head.point_head.predictor.weight",
                                         "roi_heads.mask_head.coarse_head.prediction.weight",
                                         "roi_heads.box_predictor.cls_score.weight"])):
        out = tmp_path / model
        rc, stdout, err = run_train(capsys, model, tiles, out, "--set", "SOLVER.MAX_ITER", "2",
                                    "--set", "SOLVER.BASE_LR", "0.01", "--log-period", "1",
                                    val=False)
        assert rc == 0, err
        assert "NUM_CLASSES: 4 in the config, 1 in the data" in stdout
        reinit_line = next(line for line in stdout.splitlines() if "re-initialised" in line)
        for key in reinit:
            assert key in reinit_line, (model, key)
        rows = loss_rows(out)
        assert len(rows) == 2
        if model == "cascade_gn_dconv":
            for k in range(3):
                assert f"loss_cls_stage{k}" in rows[0] and f"loss_box_reg_stage{k}" in rows[0]
            sd = torch.load(out / "model_final.pth", weights_only=True)["model"]
            start = torch.load(FIXTURES / model / "model_final.pth", weights_only=True)["model"]
            deform = [k for k in sd if "conv2.weight" in k and "res5" in k]
            assert deform and any(not torch.equal(sd[k], start[k]) for k in deform)
        else:
            assert "loss_mask_point" in rows[0] and "loss_mask" in rows[0]
        from cellseg.core.config import load_config

        cfg = load_config(out / "config.yaml")
        assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1


def test_killed_run_resumes(tiles, tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "cellseg.app.cli", "train",
            "--config", str(FIXTURES / "mask_rcnn" / "config.yaml"),
            "--weights", str(FIXTURES / "mask_rcnn" / "model_final.pth"),
            "--train", str(tiles["train"]), "--output", str(out), "--device", "cpu", *FAST,
            "--set", "SOLVER.CHECKPOINT_PERIOD", "2", "--log-period", "1"]
    proc = subprocess.Popen(argv + ["--set", "SOLVER.MAX_ITER", "400"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        # a checkpoint (iteration 1) and a metrics line after it (iteration 2)
        while not ((out / "last_checkpoint").exists() and (out / "metrics.json").exists()
                   and len((out / "metrics.json").read_text().splitlines()) >= 3):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "no checkpoint within 2 minutes"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)  # mid-iteration, no chance to clean up
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    last = (out / "last_checkpoint").read_text().strip()
    done = int(last[len("model_"):-len(".pth")]) + 1
    assert done >= 2
    rc = subprocess.run(argv + ["--set", "SOLVER.MAX_ITER", str(done + 2), "--resume"],
                        capture_output=True, text=True, timeout=300)
    assert rc.returncode == 0, rc.stderr
    assert f"resuming from {last} at iteration {done}" in rc.stdout
    # lines the killed run wrote after its last checkpoint are gone: one row per iteration
    assert [r["iteration"] for r in loss_rows(out)] == list(range(done + 2))
    assert torch.load(out / "model_final.pth", weights_only=True)["iteration"] == done + 1


def test_two_process_gloo_run(capsys, tiles, tmp_path):
    out = tmp_path / "run"
    rc, stdout, err = run_train(capsys, "mask_rcnn", tiles, out, "--set", "SOLVER.MAX_ITER", "3",
                                "--set", "SOLVER.CHECKPOINT_PERIOD", "2", "--num-gpus", "0",
                                "--num-processes", "2", "--dist-backend", "gloo",
                                "--log-period", "1", val=False)
    assert rc == 0, err
    assert "over 2 process(es)" in stdout
    assert sorted(p.name for p in out.glob("model_*.pth")) == ["model_0000001.pth",
                                                               "model_final.pth"]
    rows = loss_rows(out)
    assert [r["iteration"] for r in rows] == [0, 1, 2]


def test_stop_file_saves_a_checkpoint(capsys, tiles, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    # a STOP left from an earlier run must not stop a new one at once...
    (out / "STOP").write_text("")
    argv = [sys.executable, "-m", "cellseg.app.cli", "train",
            "--config", str(FIXTURES / "mask_rcnn" / "config.yaml"),
            "--train", str(tiles["train"]), "--output", str(out), "--device", "cpu", *FAST,
            "--set", "SOLVER.MAX_ITER", "500", "--log-period", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / "metrics.json").exists() or len(loss_rows(out)) < 2:
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline
            time.sleep(0.2)
        (out / "STOP").write_text("")  # ...but one written during the run does
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "stopped at iteration" in stdout
    last = (out / "last_checkpoint").read_text().strip()
    assert last.startswith("model_") and last != "model_final.pth"
    assert not (out / "STOP").exists()


def test_bad_inputs_fail_with_one_line(capsys, tiles, tmp_path, nuclei_dir):
    base = ["train", "--config", str(FIXTURES / "mask_rcnn" / "config.yaml"), "--output",
            str(tmp_path / "run"), "--device", "cpu"]
    cases = [
        (["--train", str(tmp_path / "missing.json")], "training data not found"),
        (["--train", str(tiles["train"]), "--set", "SOLVER.IMS_PER_BATCH", "3",
          "--num-processes", "2", "--num-gpus", "0"], "multiple"),
        (["--train", str(tiles["train"]), "--set", "MODEL.ROI_HEADS.NUM_CLASSES", "3"],
         "training data has 1 categories"),
        (["--train", str(tiles["train"]), "--weights", str(tmp_path / "nope.pth")],
         "starting weights not found"),
    ]
    # validation data with other categories than the training data
    image = tifffile.imread(nuclei_dir / "img2d.tif")
    labels = tifffile.imread(nuclei_dir / "mask2d.tif")
    other = write_tiles(tmp_path / "other", "val", VAL_TILES, image, labels,
                        category_names=("cell",))
    cases.append((["--train", str(tiles["train"]), "--val", str(other)], "categories differ"))
    # a COCO file whose image is missing
    broken = tmp_path / "broken"
    broken.mkdir()
    data = json.loads(Path(tiles["train"]).read_text())
    (broken / "train.json").write_text(json.dumps(data))
    cases.append((["--train", str(broken / "train.json")], "image file(s) not found"))
    for extra, text in cases:
        rc = cli_main(base + extra)
        err = capsys.readouterr().err
        assert rc == 2, (extra, err)
        assert text in err and err.count("\n") == 1, (extra, err)
    assert load_coco(tiles["train"]).class_names == ["nucleus"]


def test_two_processes_average_gradients_like_one_process(capsys, tmp_path, nuclei_dir):
    """2 gloo processes with one image each end, after several iterations, with the parameters
    of 1 process that takes both images per batch: the gradients really are averaged.

    Detectron2's per-process normalisers (ROI losses are means over the process's samples)
    make this exact only when both images have the same sample counts, so: every anchor is an
    RPN sample (a batch size above the anchor count: the normaliser is then that batch size
    times the images, the same sum either way), no RPN proposals reach the ROI heads
    (POST_NMS_TOPK_TRAIN 0) so the ground truth boxes are its samples, and the two tiles keep
    the same number of nuclei. No flip, crop or size choice: nothing random is left.

    The box losses are made smooth (SMOOTH_L1_BETA 1 instead of the configs' 0, plain L1): the
    ROI samples are the ground-truth boxes themselves, whose regression targets are exactly 0,
    so with L1 each gradient is the sign of a prediction hovering at 0, and float rounding
    (gloo sums in another order) flips signs: measured on an Intel Xeon, 1e-7 in the first
    iteration grew to 9.5e-2 in bbox_pred.bias after four, although both runs average alike.
    Float noise still grows with training (largest difference after four iterations: 5.6e-7
    on an AMD EPYC, 6.3e-5 on an Intel Xeon), so the bound is 1e-3: gradients that were not
    averaged move the parameters apart by about the size of their move (0.7 here).
    """
    from cellseg.trainer.data import training_sampler

    image = tifffile.imread(nuclei_dir / "img2d.tif")
    labels = tifffile.imread(nuclei_dir / "mask2d.tif")
    tiles = [(0, 0), (384, 128)]  # 12 nuclei each
    per_tile = [CroppedMasks.from_label_image(labels[y:y + TILE, x:x + TILE])[0]
                for y, x in tiles]
    keep = min(len(m) for m in per_tile)
    assert keep == 12
    out = tmp_path / "data"
    out.mkdir()
    images, instances = [], []
    for i, ((y, x), masks) in enumerate(zip(tiles, per_tile)):
        tifffile.imwrite(out / f"t{i}.tif", image[y:y + TILE, x:x + TILE])
        masks = masks[np.arange(keep)]
        images.append(CocoImage(i + 1, f"t{i}.tif", TILE, TILE))
        instances.append(Instances((TILE, TILE), masks.tight_boxes().astype(np.float32),
                                   np.ones(keep, np.float32), np.zeros(keep, np.int64), masks))
    train = write_coco(out / "train.json", images, ["nucleus"], instances)

    common = ["train", "--config", str(FIXTURES / "mask_rcnn" / "config.yaml"),
              "--weights", str(FIXTURES / "mask_rcnn" / "model_final.pth"),
              "--train", str(train), "--device", "cpu", "--defaults", "config",
              "--log-period", "1"]
    for key, value in (("INPUT.MIN_SIZE_TRAIN", "(128,)"), ("INPUT.RANDOM_FLIP", "none"),
                       ("INPUT.CROP.ENABLED", "False"), ("SOLVER.IMS_PER_BATCH", "2"),
                       ("SOLVER.MAX_ITER", "4"), ("SOLVER.WARMUP_ITERS", "0"),
                       ("SOLVER.BASE_LR", "0.004"), ("SOLVER.CHECKPOINT_PERIOD", "100"),
                       ("MODEL.RPN.BATCH_SIZE_PER_IMAGE", "100000"),
                       ("MODEL.RPN.POSITIVE_FRACTION", "1.0"),
                       ("MODEL.RPN.POST_NMS_TOPK_TRAIN", "0"),
                       ("MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "1000"),
                       ("MODEL.ROI_HEADS.POSITIVE_FRACTION", "1.0"),
                       ("MODEL.RPN.SMOOTH_L1_BETA", "1.0"),
                       ("MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA", "1.0"), ("SEED", "0")):
        common += ["--set", key, value]
    one, two = tmp_path / "one", tmp_path / "two"
    rc = cli_main(common + ["--output", str(one)])
    assert rc == 0, capsys.readouterr().err
    rc = cli_main(common + ["--output", str(two), "--num-gpus", "0", "--num-processes", "2",
                            "--dist-backend", "gloo"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "batch 2 over 2 process(es)" in captured.out

    start = torch.load(FIXTURES / "mask_rcnn" / "model_final.pth", weights_only=True)["model"]
    a = torch.load(one / "model_final.pth", weights_only=True)["model"]
    b = torch.load(two / "model_final.pth", weights_only=True)["model"]
    worst_diff, worst_move, worst = 0.0, 0.0, ""
    for k, v in a.items():
        norm = max(v.double().norm().item(), 1e-12)
        diff = (v.double() - b[k].double()).norm().item() / norm
        move = (v.double() - torch.as_tensor(start[k]).double()).norm().item() / norm
        if diff > worst_diff:
            worst_diff, worst = diff, k
        worst_move = max(worst_move, move)
    print(f"largest relative parameter difference 1 vs 2 processes: {worst_diff:.2e} ({worst}; "
          f"largest relative move from the start: {worst_move:.2e})")
    assert worst_diff < 1e-3, worst_diff
    assert worst_move > 1e-2  # the runs trained: a missing or wrong average would show
    # sharding: each rank reads its own images, together exactly the 1-process stream
    single = list(itertools.islice(training_sampler(2, 0, 0, 1), 8))
    rank0 = list(itertools.islice(training_sampler(2, 0, 0, 2), 4))
    rank1 = list(itertools.islice(training_sampler(2, 0, 1, 2), 4))
    assert rank0 == single[0::2] and rank1 == single[1::2]
    assert all(x != y for x, y in zip(rank0, rank1))


def test_estimate_times_real_iterations_and_writes_nothing(capsys, tiles, tmp_path):
    from cellseg.trainer.estimate import format_duration

    before = sorted(p.name for p in Path(tiles["dir"]).rglob("*"))
    rc = cli_main(["train", "--config", str(FIXTURES / "mask_rcnn" / "config.yaml"),
                   "--weights", str(FIXTURES / "mask_rcnn" / "model_final.pth"),
                   "--train", str(tiles["train"]), "--device", "cpu", *FAST,
                   "--set", "SOLVER.MAX_ITER", "300", "--estimate"])
    out = capsys.readouterr().out
    assert rc == 0, out
    times = [float(line.split(": ")[1].split(" s")[0]) for line in out.splitlines()
             if line.startswith("timed iteration")]
    assert 2 <= len(times) <= 5 and all(0 < t < 600 for t in times)
    # the first iteration pays start-up costs: the median of the others counts
    line = next(ln for ln in out.splitlines() if ln.startswith("per iteration: "))
    per = float(line.split()[2])
    assert per == pytest.approx(statistics.median(times[1:]), abs=1e-3)
    assert line == (f"per iteration: {per:.3f} s on cpu -> 300 iterations: about "
                    f"{format_duration(per * 300)} (evaluations not included)")
    assert "short edge 128 px" in out
    assert sorted(p.name for p in Path(tiles["dir"]).rglob("*")) == before


def test_mean_area_short_edge():
    from cellseg.trainer.augment import AugmentSettings
    from cellseg.trainer.estimate import mean_area_short_edge

    # the cell recipe: sqrt((400^2 + 600^2 + 800^2 + 1000^2) / 4) = 734.8
    assert mean_area_short_edge(AugmentSettings((400, 600, 800, 1000), 1333)) == 735
    assert mean_area_short_edge(AugmentSettings((512,), 1333)) == 512
    assert mean_area_short_edge(AugmentSettings((100, 102), 1333, "range")) == 101


def test_format_duration():
    from cellseg.trainer.estimate import format_duration

    assert [format_duration(s) for s in (0.4, 45, 600, 3 * 3600 + 20 * 60, 2 * 86400 + 7 * 3600)
            ] == ["0 s", "45 s", "10 min", "3 h 20 min", "2 d 7 h"]
