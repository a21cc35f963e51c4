"""COCO box and mask AP with pycocotools, reported as Detectron2 reports it (percent).

Cell images routinely hold 150-200 instances while COCO's default caps detections at 100 per
image, which silently drops true positives and lowers AP/AR. ``evaluate`` therefore sets
``maxDets = [1, 10, K]`` with K at least the largest number of detections on any image (and at
least 100); the report states K.

As Detectron2's COCOEvaluator does, boxes are removed from the detections for the mask
evaluation, so mask AP's small/medium/large split uses mask areas, not box areas.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..coco.checks import read_json
from ..coco.dataset import CocoDataset, load_coco, parse_coco
from ..coco.results import coco_results, parse_coco_results
from ..coco.writer import coco_dict
from ..structures import Instances

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
IOU_TYPES = ("bbox", "segm")


@dataclass(frozen=True)
class Evaluation:
    """AP tables per IoU type: ``metrics[iou_type]`` holds AP, AP50, AP75, APs, APm, APl and
    ``per_class`` {name: AP}, in percent (NaN where undefined, e.g. no large objects)."""

    metrics: dict[str, dict]
    max_dets: int
    num_images: int
    num_gt: int
    num_detections: int
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        """``{"bbox": {"AP": .., ..., "per_class": {..}, "max_dets": K}, "segm": {...}}``;
        NaN becomes null."""
        out = {}
        for iou_type, m in self.metrics.items():
            block = {k: _json_number(m[k]) for k in METRICS}
            block["per_class"] = {n: _json_number(v) for n, v in m["per_class"].items()}
            block["max_dets"] = self.max_dets
            out[iou_type] = block
        return out

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        return path

    def table(self) -> str:
        lines = [f"COCO evaluation: {self.num_images} images, {self.num_gt} ground-truth "
                 f"instances, {self.num_detections} detections; maxDets={self.max_dets}"
                 + (" (raised from COCO's 100: more detections per image than that)"
                    if self.max_dets > 100 else "")]
        lines += [f"note: {n}" for n in self.notes]
        header = f"{'':6}|" + "|".join(f"{k:>8} " for k in METRICS)
        lines += [header, "-" * len(header)]
        for iou_type, m in self.metrics.items():
            lines.append(f"{iou_type:6}|" + "|".join(f"{_fmt(m[k]):>8} " for k in METRICS))
        if self.metrics:
            types = list(self.metrics)
            names = list(next(iter(self.metrics.values()))["per_class"])
            width = max([len(n) for n in names] + [5])
            lines.append("")
            lines.append(f"per-class AP  {'class':<{width}} " + " ".join(f"{t:>8}" for t in types))
            for n in names:
                lines.append(f"              {n:<{width}} " + " ".join(
                    f"{_fmt(self.metrics[t]['per_class'][n]):>8}" for t in types))
        return "\n".join(lines)


def _fmt(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.2f}"


def _json_number(v: float):
    return None if math.isnan(v) else round(float(v), 4)


def evaluate(gt: CocoDataset | str | Path | dict,
             predictions: Mapping[int, Instances] | Sequence[dict] | str | Path,
             iou_types: Sequence[str] = IOU_TYPES, max_dets: int | None = None) -> Evaluation:
    """COCO AP of ``predictions`` against ``gt``.

    ``gt``: a COCO file (validated with :func:`cellseg.core.coco.dataset.load_coco`), its parsed dict,
    or a :class:`CocoDataset`. ``predictions``: a COCO results file or list of detection records
    (a ground-truth style file works too: scores default to 1), or image id -> Instances.
    ``max_dets``: the per-image detection cap; default: the most detections on any image, at
    least 100. ``segm`` is skipped (with a note) when the detections have no masks.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dataset, gt_dict = _ground_truth(gt)
    records = _records(predictions, dataset)
    for t in iou_types:
        if t not in IOU_TYPES:
            raise ValueError(f"unknown IoU type {t!r} (expected {IOU_TYPES})")
    most = max(Counter(r["image_id"] for r in records).values(), default=0)
    k = max(100, most) if max_dets is None else int(max_dets)
    notes = []
    if max_dets is not None and most > k:
        notes.append(f"an image has {most} detections but maxDets={k}: the lowest-scoring "
                     "ones are not counted")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt_dict
        coco_gt.createIndex()
    names = _class_names(dataset)
    metrics = {}
    for iou_type in iou_types:
        if iou_type == "segm" and records and not all("segmentation" in r for r in records):
            notes.append("detections have no masks: segm not evaluated")
            continue
        if not records:
            metrics[iou_type] = _no_detections(gt_dict, names)
            continue
        res = copy.deepcopy(records)
        if iou_type == "segm":
            for r in res:  # mask areas, not box areas, for the size split (as Detectron2)
                r.pop("bbox", None)
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes(res)
            ev = COCOeval(coco_gt, coco_dt, iou_type)
            ev.params.maxDets = [1, 10, k]
            ev.evaluate()
            ev.accumulate()
        precision = ev.eval["precision"]  # (iou, recall, class, area, maxDets)
        block = _summary(precision, ev.params.iouThrs)
        per_class = {}
        for c, cat_id in enumerate(ev.params.catIds):
            p = precision[:, :, c, 0, -1]
            p = p[p > -1]
            per_class[names[cat_id]] = float(np.mean(p)) * 100 if p.size else float("nan")
        block["per_class"] = per_class
        metrics[iou_type] = block
    return Evaluation(metrics, k, len(dataset.images),
                      sum(len(i) for i in dataset.instances.values()), len(records), notes)


def _ground_truth(gt) -> tuple[CocoDataset, dict]:
    if isinstance(gt, CocoDataset):
        data = coco_dict(gt.images, gt.categories, gt.instances)
        dataset = gt
    elif isinstance(gt, dict):
        dataset = parse_coco(gt)
        data = copy.deepcopy(gt)
    else:
        dataset = load_coco(gt)
        data = read_json(Path(gt))
    # pycocotools needs area and iscrowd on every ground-truth annotation
    from pycocotools import mask as mask_util

    images = {im.id: im for im in dataset.images}
    for ann in data["annotations"]:
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            seg = ann.get("segmentation")
            im = images[ann["image_id"]]
            if isinstance(seg, dict) or (isinstance(seg, list) and seg):
                rle = (mask_util.merge(mask_util.frPyObjects(seg, im.height, im.width))
                       if isinstance(seg, list) else
                       mask_util.frPyObjects(seg, im.height, im.width)
                       if isinstance(seg.get("counts"), list) else seg)
                if isinstance(rle.get("counts"), str):
                    rle = dict(rle, counts=rle["counts"].encode("ascii"))
                ann["area"] = float(mask_util.area(rle))
            else:
                ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
    data.setdefault("info", {})
    data.setdefault("licenses", [])
    return dataset, data


def _summary(precision: np.ndarray, iou_thrs: np.ndarray) -> dict:
    """AP, AP50, AP75, APs/m/l at the largest maxDets, in percent.

    pycocotools' own ``summarize`` asks for maxDets=100 by name for the headline AP, which is
    missing once maxDets is raised (it would print -1), so the means are taken here from the
    accumulated precision, as Detectron2's evaluator does for a custom maxDets.
    """
    def mean(p):
        p = p[p > -1]
        return float(np.mean(p)) * 100 if p.size else float("nan")

    i50 = int(np.argmin(np.abs(iou_thrs - 0.5)))
    i75 = int(np.argmin(np.abs(iou_thrs - 0.75)))
    return {"AP": mean(precision[:, :, :, 0, -1]),
            "AP50": mean(precision[i50, :, :, 0, -1]),
            "AP75": mean(precision[i75, :, :, 0, -1]),
            "APs": mean(precision[:, :, :, 1, -1]),
            "APm": mean(precision[:, :, :, 2, -1]),
            "APl": mean(precision[:, :, :, 3, -1])}


def _records(predictions, dataset: CocoDataset) -> list[dict]:
    """Validated COCO result records (each with a score)."""
    if isinstance(predictions, Mapping):
        return coco_results(dataset.categories, predictions)
    if isinstance(predictions, (str, Path)):
        source = str(predictions)
        data = read_json(Path(predictions))
    else:
        source, data = "<predictions>", list(predictions)
    parse_coco_results(data, dataset, source)  # raises DataError naming the problem
    if isinstance(data, dict):
        data = data["annotations"]
    records = []
    for d in data:
        r = {k: d[k] for k in ("image_id", "category_id", "bbox", "segmentation") if k in d}
        r["score"] = float(d.get("score", 1.0))
        records.append(r)
    return records


def _class_names(dataset: CocoDataset) -> dict:
    names, seen = {}, {}
    for c in dataset.categories:
        name = c.name if c.name not in seen else f"{c.name} (id {c.id})"
        seen[c.name] = True
        names[c.id] = name
    return names


def _no_detections(gt_dict: dict, names: dict) -> dict:
    """The table when nothing was detected: 0 wherever there is ground truth to find, NaN
    (undefined) where there is none: a size range or class without ground-truth instances, as
    pycocotools reports when it can run (it cannot on an empty result list)."""
    # pycocotools' area ranges ("all", small, medium, large); crowd regions are never counted
    ranges = {"AP": (0, 1e10), "APs": (0, 32 ** 2), "APm": (32 ** 2, 96 ** 2),
              "APl": (96 ** 2, 1e10)}
    anns = [a for a in gt_dict["annotations"] if not a.get("iscrowd", 0)]

    def score(inside) -> float:
        return 0.0 if any(inside(a) for a in anns) else float("nan")

    block = {k: score(lambda a, lo=lo, hi=hi: lo <= a["area"] <= hi)
             for k, (lo, hi) in ranges.items()}
    block["AP50"] = block["AP75"] = block["AP"]
    block["per_class"] = {names[c]: score(lambda a, c=c: a["category_id"] == c) for c in names}
    return block
