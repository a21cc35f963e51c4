"""COCO bbox/segm AP of a model on validation data (pycocotools), as Detectron2 reports it.

Results are percentages in Detectron2's layout: ``{"bbox": {"AP", "AP50", "AP75", "APs",
"APm", "APl", "AP-<class>"...}, "segm": {...}}``. COCO's default of 100 detections per image is
far too few for dense cells (an image of 500 nuclei could never reach full recall), so the
largest ``maxDets`` is raised to ``max(1000, TEST.DETECTIONS_PER_IMAGE)``.
"""
from __future__ import annotations

import contextlib
import io
import time

import numpy as np
import torch

from cellseg.core.coco import coco_dict, coco_results

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
        model.train(was_training)
    return out


def coco_evaluate(source: DataSource, predictions: dict, max_dets: int = 1000) -> dict:
    """bbox and (when masks are predicted) segm AP of ``predictions`` against ``source``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ds = source.dataset
    gt = COCO()
    with contextlib.redirect_stdout(io.StringIO()):
        gt.dataset = coco_dict(ds.images, ds.categories, ds.instances)
        gt.createIndex()
    results = coco_results(ds.categories, predictions)
    names = ds.class_names
    out = {}
    with_masks = all(p.masks is not None for p in predictions.values())
    for iou_type in ("bbox", "segm") if with_masks else ("bbox",):
        if not results:
            out[iou_type] = {m: 0.0 for m in METRICS} | {f"AP-{n}": 0.0 for n in names}
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes([dict(r) for r in results])
            ev = COCOeval(gt, dt, iou_type)
            ev.params.maxDets = [1, 100, max(int(max_dets), 100)]
            ev.evaluate()
            ev.accumulate()
        stats = summarize(ev)
        precision = ev.eval["precision"]  # (iou, recall, class, area, maxdets)
        for k, name in enumerate(names):
            stats[f"AP-{name}"] = _mean_ap(precision[:, :, k, 0, -1])
        out[iou_type] = stats
    return out


def _mean_ap(p: np.ndarray) -> float:
    p = p[p > -1]
    return float(np.mean(p) * 100) if p.size else float("nan")


def summarize(ev) -> dict:
    """AP, AP50, AP75, APs/m/l at the *largest* maxDets. (pycocotools' ``summarize`` computes
    its first AP at maxDets=100 whatever the parameters say, which caps dense images.)"""
    precision = ev.eval["precision"]
    ious = np.asarray(ev.params.iouThrs)
    out = {"AP": _mean_ap(precision[:, :, :, 0, -1])}
    for name, thr in (("AP50", 0.5), ("AP75", 0.75)):
        out[name] = _mean_ap(precision[np.isclose(ious, thr)][:, :, :, 0, -1])
    for name, area in (("APs", 1), ("APm", 2), ("APl", 3)):
        out[name] = _mean_ap(precision[:, :, :, area, -1])
    return out


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
