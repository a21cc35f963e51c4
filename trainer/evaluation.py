"""COCO bbox/segm AP of a model on validation data (pycocotools), as Detectron2 reports it.

Results are percentages in Detectron2's layout: ``{"bbox": {"AP", "AP50", "AP75", "APs",
"APm", "APl", "AP-<class>"...}, "segm": {...}}``. COCO's default of 100 detections per image is
far too few for dense cells (an image of 500 nuclei could never reach full recall), so the
largest ``maxDets`` is raised to ``max(1000, TEST.DETECTIONS_PER_IMAGE)``.
"""
from __future__ import annotations

import time

import torch

from .data import DataSource

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def predict_dataset(model, cfg, source: DataSource, device) -> dict:
    """image id -> Instances in original pixels (the model is put back in its previous mode)."""
    from cellseg.core.engine.predictor import Predictor
    from cellseg.core.io import read_image

    was_training = model.training
    predictor = Predictor(cfg, model, torch.device(device))  # converts images by the rule
    out = {}
    try:
        for im in source.dataset.images:
            out[im.id] = predictor(read_image(source.image_path(im.id)))
    finally:
        # the Predictor switched the model to inference layout (channels-last): undo it
        model.use_channels_last(False)
        model.train(was_training)
    return out


def coco_evaluate(source: DataSource, predictions: dict, max_dets: int = 1000) -> dict:
    """bbox and (when masks are predicted) segm AP of ``predictions`` against ``source``.

    Uses :func:`cellseg.core.evaluation.evaluate` (the same numbers as ``cellseg eval``) with
    ``max_dets`` detections per image, and flattens per-class AP to ``AP-<name>`` keys, the
    layout of Detectron2's metrics.json.
    """
    from cellseg.core.evaluation import evaluate

    with_masks = all(p.masks is not None for p in predictions.values())
    ev = evaluate(source.dataset, predictions, ("bbox", "segm") if with_masks else ("bbox",),
                  max_dets=int(max_dets))
    return {iou_type: {m: block[m] for m in METRICS}
            | {f"AP-{name}": ap for name, ap in block["per_class"].items()}
            for iou_type, block in ev.metrics.items()}


def evaluate_model(model, cfg, source: DataSource, device) -> dict:
    t0 = time.perf_counter()
    preds = predict_dataset(model, cfg, source, device)
    results = coco_evaluate(source, preds, max(1000, int(cfg.TEST.DETECTIONS_PER_IMAGE)))
    results["seconds"] = time.perf_counter() - t0
    return results


def flatten(results: dict) -> dict:
    """``{"bbox": {"AP": x}}`` -> ``{"bbox/AP": x}`` (Detectron2's metrics.json keys)."""
    return {f"{t}/{k}": v for t, d in results.items() if isinstance(d, dict) for k, v in d.items()}


def format_table(results: dict) -> str:
    lines = []
    for iou_type in ("bbox", "segm"):
        if iou_type not in results:
            continue
        d = results[iou_type]
        lines.append(f"{iou_type}: " + "  ".join(f"{m} {d[m]:.2f}" for m in METRICS))
        per_class = {k[3:]: v for k, v in d.items() if k.startswith("AP-")}
        if per_class:
            lines.append("  per category AP: " + "  ".join(f"{n} {v:.2f}"
                                                          for n, v in per_class.items()))
    return "\n".join(lines)
