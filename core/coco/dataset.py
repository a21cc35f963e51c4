"""A COCO ground-truth dataset: its records, and reading and validating one file.

``load_coco`` turns a COCO ground-truth JSON into one :class:`Instances` per image (classes are
0-based indices into the categories sorted by id, scores 1.0, masks decoded from RLE or polygons).
Every structural problem raises :class:`DataError` naming the file and the offending record, so
a user can fix the file instead of reading a traceback.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io.header import MAX_PIXELS_ENV, max_pixels
from ..structures import Instances
from .checks import (MAX_LABEL, MAX_SIDE, as_flag, as_int, as_text, check_bbox, decode_masks,
                     read_json, require, segmentation_rle, show)


@dataclass(frozen=True)
class CocoImage:
    id: int
    file_name: str
    height: int
    width: int

    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)


@dataclass(frozen=True)
class CocoCategory:
    id: int
    name: str


@dataclass(frozen=True)
class CocoDataset:
    """A loaded COCO file.

    ``categories`` are sorted by id; class ``k`` of every ``Instances`` is ``categories[k]``.
    ``instances`` maps image id -> Instances in annotation-file order (crowd annotations,
    ``iscrowd`` 1, are regions to ignore in evaluation, not instances: they are counted in
    ``crowd_annotations`` and left out). ``label_ids`` maps image id -> the ``label_id`` of each
    instance (0 where the file has none); it is what makes seed-folder round trips lossless.
    """

    images: list[CocoImage]
    categories: list[CocoCategory]
    instances: dict[int, Instances]
    label_ids: dict[int, np.ndarray] = field(default_factory=dict)
    crowd_annotations: int = 0
    path: Path | None = None

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.categories]

    def image(self, image_id: int) -> CocoImage:
        for im in self.images:
            if im.id == image_id:
                return im
        raise KeyError(image_id)

    def num_instances(self) -> int:
        return sum(len(i) for i in self.instances.values())


# ------------------------------------------------------------------------------------ reading
def load_coco(path: str | Path) -> CocoDataset:
    """Read and validate a COCO instance file. Raises DataError naming the file and problem."""
    path = Path(path)
    data = read_json(path)
    return parse_coco(data, source=str(path), path=path)


def parse_coco(data, source: str = "<coco>", path: Path | None = None) -> CocoDataset:
    """Validate an already-parsed COCO dict (see :func:`load_coco`).

    Every field is checked by :mod:`cellseg.core.coco.checks` (types, id ranges, text, boxes
    inside the image, RLE/polygon masks of the image's size, the image size against
    ``CELLSEG_MAX_PIXELS``); the first problem raises one DataError line.
    """
    if not isinstance(data, dict):
        raise DataError(f"{source}: top level must be a JSON object with 'images', "
                        f"'annotations' and 'categories', got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(f"{source}: missing required key '{key}'")
        if not isinstance(data[key], list):
            raise DataError(f"{source}: '{key}' must be a list, got {show(data[key])}")

    images = [_parse_image(rec, i, source) for i, rec in enumerate(data["images"])]
    seen: dict[int, CocoImage] = {}
    for im in images:
        if im.id in seen:
            raise DataError(f"{source}: duplicate image id {im.id}")
        seen[im.id] = im
    categories = [_parse_category(rec, i, source) for i, rec in enumerate(data["categories"])]
    ids = [c.id for c in categories]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"{source}: duplicate category id {dup}")
    categories.sort(key=lambda c: c.id)
    class_of = {c.id: k for k, c in enumerate(categories)}

    per_image: dict[int, list[dict]] = {im.id: [] for im in images}
    crowd = 0
    ann_ids: set[int] = set()
    for i, ann in enumerate(data["annotations"]):
        where = f"{source}: annotation #{i}"
        require(ann, ("id", "image_id", "category_id"), where)
        ann_id = as_int(ann["id"], "id", where)
        where = f"{source}: annotation id {ann_id}"
        if ann_id in ann_ids:
            raise DataError(f"{where}: duplicate annotation id")
        ann_ids.add(ann_id)
        image_id = as_int(ann["image_id"], "image_id", where)
        category_id = as_int(ann["category_id"], "category_id", where)
        if image_id not in per_image:
            raise DataError(f"{where}: unknown image_id {image_id}")
        if category_id not in class_of:
            raise DataError(f"{where}: unknown category_id {category_id} (categories: "
                            f"{show(sorted(class_of), 40)})")
        if as_flag(ann.get("iscrowd", 0), "iscrowd", where):
            crowd += 1
            continue
        label = as_int(ann.get("label_id", 0), "label_id", where, hi=MAX_LABEL)
        per_image[image_id].append(dict(ann, id=ann_id, image_id=image_id,
                                        category_id=category_id, label_id=label))

    has_segm = {("segmentation" in a and a["segmentation"] not in (None, [], {}))
                for anns in per_image.values() for a in anns}
    if len(has_segm) == 2:
        first = next(a for anns in per_image.values() for a in anns
                     if a.get("segmentation") in (None, [], {}))
        raise DataError(f"{source}: annotation id {first['id']} has no segmentation while others "
                        "have one (masks are needed on all annotations or on none)")
    with_masks = has_segm == {True}

    instances, label_ids = {}, {}
    for im in images:
        anns = per_image[im.id]
        instances[im.id] = instances_of(im, anns, class_of, with_masks, source)
        label_ids[im.id] = np.array([a["label_id"] for a in anns], np.int64)
    return CocoDataset(images, categories, instances, label_ids, crowd, path)


def _parse_image(rec, i, source) -> CocoImage:
    where = f"{source}: image #{i}"
    require(rec, ("id", "file_name", "height", "width"), where)
    image_id = as_int(rec["id"], "id", where)
    where = f"{source}: image #{i} (id {image_id})"
    h = as_int(rec["height"], "height", where, lo=1, hi=MAX_SIDE)
    w = as_int(rec["width"], "width", where, lo=1, hi=MAX_SIDE)
    file_name = as_text(rec["file_name"], "file_name", where)
    if not file_name.strip():
        raise DataError(f"{where}: file_name is empty")
    limit = max_pixels()
    if h * w > limit:
        raise DataError(f"{where}: {w}x{h} = {h * w:,} pixels is above the limit of {limit:,} "
                        f"(set the environment variable {MAX_PIXELS_ENV} to raise it)")
    return CocoImage(image_id, file_name, h, w)


def _parse_category(rec, i, source) -> CocoCategory:
    where = f"{source}: category #{i}"
    require(rec, ("id", "name"), where)
    return CocoCategory(as_int(rec["id"], "id", where), as_text(rec["name"], "name", where))


def instances_of(im: CocoImage, anns: list[dict], class_of, with_masks, source) -> Instances:
    """One image's annotations (or detections) as :class:`Instances`, in file order.

    Args:
        anns: validated records with ``id``, ``category_id`` and a ``bbox`` and/or
            ``segmentation``.
        class_of: category id -> 0-based class index.
        with_masks: decode the segmentations (all records have one) or keep boxes only.

    Returns:
        Instances of ``im.size`` with scores 1.0; boxes come from the masks where a record
        has none.
    """
    h, w = im.size
    n = len(anns)
    wheres = [f"{source}: annotation id {a['id']} (image id {im.id})" for a in anns]
    classes = np.array([class_of[a["category_id"]] for a in anns], np.int64)
    scores = np.ones(n, np.float32)
    masks = None
    if with_masks:
        counts = [segmentation_rle(a["segmentation"], (h, w), where)
                  for a, where in zip(anns, wheres)]
        masks = decode_masks(counts, (h, w), wheres)
    boxes = np.zeros((n, 4), np.float32)
    missing = []
    for k, (a, where) in enumerate(zip(anns, wheres)):
        if a.get("bbox") is None:
            if masks is None:
                raise DataError(f"{where}: has neither bbox nor segmentation")
            missing.append(k)
            continue
        boxes[k] = check_bbox(a["bbox"], (h, w), where)
    if missing:  # derive boxes from masks where the file gives none
        boxes[missing] = masks[missing].tight_boxes()
    return Instances((h, w), boxes, scores, classes, masks)
