"""Training benchmark: train on the left half of the nuclei image, segm AP on the right half.

    .venv/bin/python benchmarks/train_nuclei.py [--model mask_rcnn] [--iterations 300]
        [--weights none|fixture|PATH] [--device cpu] [--out DIR]

Runs the real ``cellseg train`` (in this process) on ``/work/shared/data/nuclei``: the left
512x256 half (about 60 nuclei) is the training set, the right half the validation set. The
fixture models' architectures are used (small ResNet-50 FPN variants); by default from scratch,
since the fixture weights were trained on the whole image and have already seen the right half
(``--weights fixture`` shows fine-tuning, but its AP is not a held-out figure). Prints the
iterations, wall time, seconds per iteration, peak memory and COCO AP (bbox/segm, AP50, AP75)
before and after training, and writes them as JSON (``--json``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CELLSEG_SHARED", REPO.parent / "shared"))


def write_halves(out: Path) -> tuple[Path, Path]:
    from cellseg.core.coco.dataset import CocoImage
    from cellseg.core.coco.writer import write_coco
    from cellseg.core.structures import CroppedMasks, Instances

    image = tifffile.imread(SHARED / "data" / "nuclei" / "img2d.tif")
    labels = tifffile.imread(SHARED / "data" / "nuclei" / "mask2d.tif")
    paths = []
    for name, sl in (("left", np.s_[:, :256]), ("right", np.s_[:, 256:])):
        tifffile.imwrite(out / f"{name}.tif", image[sl])
        lab = labels[sl]
        masks, _ = CroppedMasks.from_label_image(lab)
        inst = Instances(lab.shape, masks.tight_boxes().astype(np.float32),
                         np.ones(len(masks), np.float32), np.zeros(len(masks), np.int64), masks)
        paths.append(write_coco(out / f"{name}.json",
                                [CocoImage(1, f"{name}.tif", *lab.shape)], ["nucleus"], [inst]))
    return paths[0], paths[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mask_rcnn",
                   choices=["mask_rcnn", "cascade_gn_dconv", "pointrend"])
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--weights", default="none", help="none (from scratch), fixture, or a path")
    p.add_argument("--lr", type=float, default=0.004)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="run folder (default: a temporary folder)")
    p.add_argument("--json", help="write the summary here")
    args = p.parse_args(argv)

    from cellseg.app.cli import main as cli_main

    fixture = SHARED / "fixtures" / "detectron2" / args.model
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="train_nuclei_"))
    work.mkdir(parents=True, exist_ok=True)
    left, right = write_halves(work)
    weights = {"none": None, "fixture": str(fixture / "model_final.pth")}.get(args.weights,
                                                                             args.weights)
    run = work / "run"
    argv = ["train", "--config", str(fixture / "config.yaml"), "--train", str(left),
            "--val", str(right), "--output", str(run), "--device", args.device,
            "--eval-initial", "--log-period", "10",
            "--set", "SOLVER.MAX_ITER", str(args.iterations),
            "--set", "SOLVER.BASE_LR", str(args.lr),
            "--set", "SOLVER.IMS_PER_BATCH", str(args.batch),
            "--set", "SOLVER.WARMUP_ITERS", str(min(50, args.iterations // 5)),
            "--set", "SOLVER.STEPS", f"({int(args.iterations * 0.8)},)",
            "--set", "SOLVER.CHECKPOINT_PERIOD", str(args.iterations),
            "--set", "INPUT.MIN_SIZE_TRAIN", "(224, 256, 288)",
            "--set", "INPUT.MAX_SIZE_TRAIN", "1333",
            "--set", "INPUT.MIN_SIZE_TEST", "256", "--set", "SEED", "0"]
    if weights:
        argv += ["--weights", weights]
    t0 = time.perf_counter()
    rc = cli_main(argv)
    wall = time.perf_counter() - t0
    if rc != 0:
        return rc
    rows = [json.loads(line) for line in (run / "metrics.json").read_text().splitlines()]
    loss_rows = [r for r in rows if "total_loss" in r]
    before = json.loads((run / "evaluation" / "initial.json").read_text())
    after = json.loads((run / "evaluation" / "final.json").read_text())
    summary = {
        "model": args.model, "weights": args.weights, "device": args.device,
        "iterations": args.iterations, "batch": args.batch, "wall_seconds": round(wall, 1),
        "seconds_per_iteration": round(float(np.median([r["time"] for r in loss_rows])), 3),
        "peak_memory_mb": round(max(r["peak_memory_mb"] for r in loss_rows)),
        "total_loss_first_last": [round(loss_rows[0]["total_loss"], 3),
                                  round(loss_rows[-1]["total_loss"], 3)],
        "before": {t: {k: round(before[t][k], 2) for k in ("AP", "AP50", "AP75")}
                   for t in ("bbox", "segm")},
        "after": {t: {k: round(after[t][k], 2) for k in ("AP", "AP50", "AP75")}
                  for t in ("bbox", "segm")},
        "cpu_threads": __import__("torch").get_num_threads(),
        "run_folder": str(run),
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
