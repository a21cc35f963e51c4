"""Held-out figures of the demo models: recall, precision at mask IoU 0.5 and COCO AP.

    .venv/bin/python packaging/eval_demo_models.py DATA_DIR --model NAME CONFIG WEIGHTS
        [--model NAME2 CONFIG2 WEIGHTS2] [--json out.json]

``DATA_DIR`` is what ``packaging/make_demo_data.py`` wrote; the models are run on its
``heldout.png`` (the right half of the nuclei image) and scored against ``heldout.json``. With
two models the WBF ensemble (the app's Ensemble choice: ``Settings(wbf=True)``) is scored too.

Matching is COCO's: detections in falling score order each take the unmatched ground-truth
nucleus they overlap most, if that mask IoU is at least 0.5. At a score threshold t, recall is
matched detections scoring >= t over ground-truth nuclei, precision the same over detections
scoring >= t. Printed at the app's default threshold 0.5 and at the threshold (0.05 steps) that
maximises min(recall, precision).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

THRESHOLDS = np.round(np.arange(0.05, 1.0, 0.05), 2)


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Mask IoU of every prediction with every ground-truth instance.

    Args:
        pred: (N, H, W) bool.
        gt: (M, H, W) bool.

    Returns:
        (N, M) float64 IoU.
    """
    p = pred.reshape(len(pred), -1).astype(np.float32)
    g = gt.reshape(len(gt), -1).astype(np.float32)
    inter = p @ g.T
    union = p.sum(1)[:, None] + g.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def match(iou: np.ndarray, scores: np.ndarray, thr: float = 0.5) -> np.ndarray:
    """COCO greedy matching. Returns (N,) bool: prediction i matched a ground truth at ``thr``.

    Args:
        iou: (N, M) prediction x ground-truth IoU.
        scores: (N,) prediction scores.
    """
    matched = np.zeros(len(scores), bool)
    free = np.ones(iou.shape[1], bool)
    # a loop over detections in score order: each match changes what the next may take
    for i in np.argsort(-scores, kind="stable"):
        cand = np.where(free, iou[i], -1.0)
        j = int(np.argmax(cand)) if len(cand) else -1
        if j >= 0 and cand[j] >= thr:
            matched[i] = True
            free[j] = False
    return matched


def recall_precision(inst, gt_masks: np.ndarray) -> list[dict]:
    """Shown / recall / precision at every threshold of ``THRESHOLDS``."""
    dense = inst.dense_masks() if len(inst) else np.zeros((0, *gt_masks.shape[1:]), bool)
    ok = match(mask_iou(dense, gt_masks), inst.scores)
    rows = []
    for t in THRESHOLDS:
        keep = inst.scores >= t
        tp, shown = int((ok & keep).sum()), int(keep.sum())
        rows.append({"threshold": float(t), "shown": shown, "recall": tp / len(gt_masks),
                     "precision": tp / shown if shown else 0.0})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path)
    p.add_argument("--model", nargs=3, action="append", metavar=("NAME", "CONFIG", "WEIGHTS"),
                   required=True)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    from cellseg.core.coco.dataset import load_coco
    from cellseg.core.engine import load_predictor
    from cellseg.core.evaluation.coco_eval import evaluate
    from cellseg.core.io.image import read_image
    from cellseg.core.postprocess.pipeline import Settings, compose

    gt = load_coco(args.data / "heldout.json")
    gt_masks = gt.instances[gt.images[0].id].dense_masks()
    image = read_image(args.data / "heldout.png")
    raw = {}
    for name, config, weights in args.model:
        raw[name] = load_predictor(config, weights, device="cpu")(image)
    results = dict(raw)
    if len(raw) > 1:
        results["ensemble (WBF)"] = compose(raw, Settings(wbf=True))
    report = {}
    for name, inst in results.items():
        rows = recall_precision(inst, gt_masks)
        at05 = next(r for r in rows if r["threshold"] == 0.5)
        best = max(rows, key=lambda r: (min(r["recall"], r["precision"]), r["threshold"]))
        ev = evaluate(gt, {gt.images[0].id: inst}).metrics
        report[name] = {"at_0.5": at05, "best": best,
                        "segm": {k: ev["segm"][k] for k in ("AP", "AP50", "AP75")},
                        "bbox": {k: ev["bbox"][k] for k in ("AP", "AP50", "AP75")}}
    print(f"held-out half: {len(gt_masks)} nuclei")
    print(f"{'model':<16}| thr | shown | recall | precision | segm AP | AP50 | AP75 | bbox AP")
    for name, r in report.items():
        for row in (r["at_0.5"], r["best"]):
            print(f"{name:<16}| {row['threshold']:.2f} | {row['shown']:5d} | {row['recall']:6.2f} "
                  f"| {row['precision']:9.2f} | {r['segm']['AP']:7.1f} | {r['segm']['AP50']:4.1f} "
                  f"| {r['segm']['AP75']:4.1f} | {r['bbox']['AP']:7.1f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
