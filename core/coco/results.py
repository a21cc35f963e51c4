"""COCO *results* files: a list of scored detections, as Detectron2 and ``cellseg predict`` write.

``write_coco_results`` writes them; ``load_coco_results`` reads them against a ground-truth
:class:`CocoDataset` (for ``cellseg eval``) into one :class:`Instances` per image, sorted by
score, with the same validation as ground truth.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import DataError
from ..structures import Instances
from .checks import as_int, read_json, require, show
from .dataset import CocoCategory, CocoDataset, instances_of


def coco_results(categories: Sequence[CocoCategory],
                 instances_by_image: Mapping[int, Instances]) -> list[dict]:
    """COCO results records (image_id, category_id, bbox XYWH, score, RLE segmentation)."""
    cats = sorted(categories, key=lambda c: c.id)
    out = []
    for image_id, inst in instances_by_image.items():
        for rec in inst.to_coco_results(image_id):
            rec["category_id"] = cats[rec["category_id"] - 1].id
            out.append(rec)
    return out


def write_coco_results(path: str | Path, categories: Sequence[CocoCategory],
                       instances_by_image: Mapping[int, Instances]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(coco_results(categories, instances_by_image),
                               separators=(",", ":")) + "\n", encoding="utf-8")
    return path


def load_coco_results(path: str | Path, dataset: CocoDataset) -> dict[int, Instances]:
    """Read a COCO results file (a list of detections) against ``dataset``.

    Returns image id -> Instances (sorted by score, highest first) for every image of the
    dataset (empty where there are no detections). Detections naming an image or category the
    dataset lacks, or whose RLE size differs from the image, raise DataError.
    """
    path = Path(path)
    data = read_json(path)
    return parse_coco_results(data, dataset, str(path))


def parse_coco_results(data, dataset: CocoDataset, source: str = "<results>"
                       ) -> dict[int, Instances]:
    if isinstance(data, dict) and "annotations" in data:
        data = data["annotations"]  # a GT-style file used as predictions
    if not isinstance(data, list):
        raise DataError(f"{source}: a COCO results file must be a JSON list of detections")
    images = {im.id: im for im in dataset.images}
    class_of = {c.id: k for k, c in enumerate(dataset.categories)}
    per_image: dict[int, list[dict]] = {i: [] for i in images}
    for i, det in enumerate(data):
        where = f"{source}: detection #{i}"
        require(det, ("image_id", "category_id"), where)
        image_id = as_int(det["image_id"], "image_id", where)
        category_id = as_int(det["category_id"], "category_id", where)
        if image_id not in images:
            raise DataError(f"{where}: unknown image_id {image_id} (not in the ground truth)")
        if category_id not in class_of:
            raise DataError(f"{where}: unknown category_id {category_id}")
        if "bbox" not in det and "segmentation" not in det:
            raise DataError(f"{where}: needs a bbox or a segmentation")
        score = det.get("score", 1.0)
        if isinstance(score, bool) or not isinstance(score, (int, float)) or score != score:
            raise DataError(f"{where}: score must be a number, got {show(score)}")
        per_image[image_id].append(dict(det, image_id=image_id, category_id=category_id))
    with_masks = all("segmentation" in d for d in data) and len(data) > 0
    out = {}
    for image_id, dets in per_image.items():
        im = images[image_id]
        dets = [d if "id" in d else dict(d, id=f"#{k}") for k, d in enumerate(dets)]
        inst = instances_of(im, dets, class_of, with_masks, source)
        scores = np.array([float(d.get("score", 1.0)) for d in dets], np.float32)
        out[image_id] = inst.replace(scores=scores).sorted_by_score()
    return out
