"""Writing COCO ground truth that Detectron2, pycocotools and CVAT load, and tracing polygons.

``write_coco`` writes what Detectron2 (``load_coco_json``), pycocotools (``COCO``) and CVAT
(COCO 1.0 import) load: XYWH boxes, pixel areas, ``iscrowd`` 0, compressed RLE (lossless) or
polygons. Annotation ids are numbered 1..N in image order then instance order, and the JSON has a
fixed key order and number formatting, so export -> import -> export is byte-identical.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..structures import CroppedMasks, Instances
from .dataset import CocoCategory, CocoImage


def coco_dict(images: Sequence[CocoImage], categories: Sequence[CocoCategory | str],
              instances_by_image: Mapping[int, Instances] | Sequence[Instances],
              segmentation: str = "rle",
              label_ids: Mapping[int, np.ndarray] | None = None) -> dict:
    """The COCO dict :func:`write_coco` writes (see there)."""
    if segmentation not in ("rle", "polygon"):
        raise ValueError(f"segmentation must be 'rle' or 'polygon', got {segmentation!r}")
    cats = [c if isinstance(c, CocoCategory) else CocoCategory(k + 1, str(c))
            for k, c in enumerate(categories)]
    cats = sorted(cats, key=lambda c: c.id)
    if not isinstance(instances_by_image, Mapping):
        if len(instances_by_image) != len(images):
            raise ValueError("instances_by_image must give one Instances per image")
        instances_by_image = {im.id: inst for im, inst in zip(images, instances_by_image)}

    annotations = []
    for im in images:
        inst = instances_by_image.get(im.id)
        if inst is None or len(inst) == 0:
            continue
        if inst.image_size != im.size:
            raise ValueError(f"instances of image {im.id} are for size {inst.image_size}, "
                             f"the image is {im.size}")
        if inst.classes.min() < 0 or inst.classes.max() >= len(cats):
            raise ValueError(f"image {im.id}: class index outside the {len(cats)} categories")
        segs = _segmentations(inst, segmentation)
        if inst.masks is not None:
            areas = inst.masks.areas().tolist()
        else:
            wh = inst.boxes[:, 2:] - inst.boxes[:, :2]
            areas = (wh[:, 0].astype(np.float64) * wh[:, 1]).tolist()
        labels = None if label_ids is None else label_ids.get(im.id)
        # float32 -> float keeps the round trip exact: json writes the shortest repr of a
        # double and reading it back to float32 gives the same bits
        for k, (box, cls, area) in enumerate(zip(inst.boxes.tolist(), inst.classes.tolist(),
                                                 areas)):
            x0, y0, x1, y1 = box
            rec = {"id": len(annotations) + 1, "image_id": im.id,
                   "category_id": cats[cls].id, "bbox": [x0, y0, x1 - x0, y1 - y0],
                   "area": float(area), "iscrowd": 0}
            if segs is not None:
                rec["segmentation"] = segs[k]
            if labels is not None and int(labels[k]) > 0:
                rec["label_id"] = int(labels[k])
            annotations.append(rec)
    return {
        "info": {"description": "exported by cellseg-gui", "version": "1.0"},
        "licenses": [],
        "images": [{"id": im.id, "file_name": im.file_name, "height": im.height,
                    "width": im.width} for im in images],
        "categories": [{"id": c.id, "name": c.name, "supercategory": ""} for c in cats],
        "annotations": annotations,
    }


def write_coco(path: str | Path, images: Sequence[CocoImage],
               categories: Sequence[CocoCategory | str],
               instances_by_image: Mapping[int, Instances] | Sequence[Instances],
               segmentation: str = "rle",
               label_ids: Mapping[int, np.ndarray] | None = None) -> Path:
    """Write a COCO instance file that pycocotools, Detectron2 and CVAT load.

    ``categories``: CocoCategory records (or plain names, which get ids 1..K); class ``k`` of
    each Instances is the k-th category by id. ``instances_by_image``: image id -> Instances (or
    a sequence aligned with ``images``). ``segmentation``: ``"rle"`` (compressed RLE, lossless)
    or ``"polygon"`` (outer contours through the boundary pixels' corners; holes are lost).
    ``label_ids``: optional image id -> per-instance label values, written as ``label_id``.
    Boxes are written as XYWH from ``Instances.boxes``; areas are mask pixel counts (box areas
    for box-only instances); ids are deterministic. Returns the path.
    """
    path = Path(path)
    text = json.dumps(coco_dict(images, categories, instances_by_image, segmentation, label_ids),
                      separators=(",", ":"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _segmentations(inst: Instances, kind: str) -> list | None:
    if inst.masks is None:
        return None
    if kind == "rle":
        return [{"size": list(r["size"]), "counts": r["counts"]} for r in inst.masks.to_rle()]
    return [_polygons(inst.masks, i) for i in range(len(inst))]


def _polygons(masks: CroppedMasks, i: int) -> list[list[float]]:
    """Outer contours of mask ``i`` as COCO polygons along the pixels' outer corners."""
    import cv2

    crop = masks.crop(i).astype(np.uint8)
    if crop.size == 0 or not crop.any():
        return []
    x0, y0 = masks.windows[i, :2]
    # Trace the 2x upsampled mask: its contour runs through the centres of the upsampled
    # boundary pixels, i.e. 1/4 px inside the outer pixel edges, and never through a pixel
    # centre. COCO rasterisers (pycocotools) set the pixels whose centres lie inside, so the
    # polygon gives back exactly the mask's pixels (holes excepted: outer contours only).
    big = np.pad(np.kron(crop, np.ones((2, 2), np.uint8)), 1)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        # padded upsampled index p -> original coordinate of its centre: (p - 1 + 0.5) / 2
        pts = (c[:, 0, :].astype(np.float64) - 0.5) / 2.0
        pts[:, 0] += x0
        pts[:, 1] += y0
        if len(pts) >= 3:
            polys.append(pts.ravel().tolist())
    return polys
