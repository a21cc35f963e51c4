"""COCO instance-segmentation files: read and validate, write, and detections (results) files.

``load_coco`` turns a COCO ground-truth JSON into one :class:`Instances` per image (classes are
0-based indices into the categories sorted by id, scores 1.0, masks decoded from RLE or polygons by
pycocotools). Every structural problem raises :class:`DataError` naming the file and the offending
record, so a user can fix the file instead of reading a traceback.

``write_coco`` writes what Detectron2 (``load_coco_json``), pycocotools (``COCO``) and CVAT
(COCO 1.0 import) load: XYWH boxes, pixel areas, ``iscrowd`` 0, compressed RLE (lossless) or
polygons. Annotation ids are numbered 1..N in image order then instance order, and the JSON has a
fixed key order and number formatting, so export -> import -> export is byte-identical.

``load_coco_results`` / ``write_coco_results`` handle Detectron2/COCO *results* files (a list of
detections with scores) for ``cellseg eval``.

Research ("seed") folders -- one folder per sample holding ``image.tif`` and instance-label masks
``class1.tif`` ... ``classK.tif`` -- convert losslessly with :func:`seed_to_coco` and
:func:`coco_to_seed`. The original label value of each instance is kept in an extra annotation
field ``label_id`` (ignored by other tools) so a round trip restores the label images pixel for
pixel.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .coco_checks import (MAX_LABEL, MAX_SIDE, as_flag, as_int, as_text, check_bbox,
                          decode_masks, read_json, require, segmentation_rle, show)
from .errors import DataError
from .io.header import MAX_PIXELS_ENV, max_pixels
from .structures import CroppedMasks, Instances

__all__ = [
    "CocoImage", "CocoCategory", "CocoDataset", "load_coco", "parse_coco", "write_coco",
    "coco_dict", "load_coco_results", "coco_results", "write_coco_results",
    "seed_to_coco", "coco_to_seed", "SeedSample",
]


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

    Every field is checked by :mod:`cellseg.core.coco_checks` (types, id ranges, text, boxes
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
        instances[im.id] = _instances_of(im, anns, class_of, with_masks, source)
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


def _instances_of(im: CocoImage, anns: list[dict], class_of, with_masks, source) -> Instances:
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


# ------------------------------------------------------------------------------------ writing
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


# ------------------------------------------------------------------------------ results files
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
        inst = _instances_of(im, dets, class_of, with_masks, source)
        scores = np.array([float(d.get("score", 1.0)) for d in dets], np.float32)
        out[image_id] = inst.replace(scores=scores).sorted_by_score()
    return out


# ---------------------------------------------------------------------------- seed folders
@dataclass(frozen=True)
class SeedSample:
    """One research-folder sample: ``folder/image.tif`` and ``folder/class{k}.tif``."""
    name: str
    image: Path
    class_masks: dict[int, Path]  # 1-based class number -> label TIFF


def find_seed_samples(root: str | Path) -> list[SeedSample]:
    """The sample folders under ``root`` (sorted by name) that hold an ``image.tif``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"not a folder: {root}")
    samples = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        image = _first_existing(folder, "image")
        if image is None:
            continue
        masks = {}
        for p in folder.iterdir():
            stem, suffix = p.stem.lower(), p.suffix.lower()
            if suffix in (".tif", ".tiff") and stem.startswith("class") and stem[5:].isdigit():
                k = int(stem[5:])
                if k < 1:
                    raise DataError(f"{p}: class numbers start at 1")
                masks[k] = p
        samples.append(SeedSample(folder.name, image, dict(sorted(masks.items()))))
    if not samples:
        raise DataError(f"{root}: no sample folders with an image.tif found (expected "
                        "<root>/<sample>/image.tif and class1.tif ... classK.tif)")
    return samples


def _first_existing(folder: Path, stem: str) -> Path | None:
    for suffix in (".tif", ".tiff"):
        p = folder / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def _read_labels(path: Path) -> np.ndarray:
    import tifffile

    try:
        labels = tifffile.imread(path)
    except Exception as exc:
        raise DataError(f"cannot read label image {path}: {exc}") from exc
    labels = np.squeeze(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "ui":
        raise DataError(f"{path}: a label image must be a 2-D integer image, got "
                        f"{labels.dtype} {labels.shape}")
    if labels.dtype.kind == "i" and labels.min() < 0:
        raise DataError(f"{path}: negative label values")
    return labels


def seed_to_coco(root: str | Path, out_json: str | Path,
                 class_names: Sequence[str] | None = None,
                 segmentation: str = "rle") -> CocoDataset:
    """Convert a seed folder tree to one COCO file; ``file_name`` is relative to ``root``.

    Categories are ``class1``..``classK`` (ids 1..K, K the highest class file found) unless
    ``class_names`` gives K names. Each label value of ``class{k}.tif`` becomes one instance
    of category k; its value is kept as ``label_id``. Returns the dataset as written.
    """
    from .io.image import read_image

    root = Path(root)
    samples = find_seed_samples(root)
    k_max = max((max(s.class_masks) for s in samples if s.class_masks), default=0)
    if class_names is not None:
        if k_max > len(class_names):
            raise DataError(f"{root}: class{k_max}.tif exists but only {len(class_names)} class "
                            "names were given")
        k_max = len(class_names)
    if k_max == 0:
        raise DataError(f"{root}: no class1.tif ... classK.tif masks found")
    names = list(class_names) if class_names is not None else [f"class{k}"
                                                               for k in range(1, k_max + 1)]
    categories = [CocoCategory(k + 1, n) for k, n in enumerate(names)]
    images, instances, label_ids = [], {}, {}
    for image_id, s in enumerate(samples, start=1):
        shape = read_image(s.image).shape[:2]
        parts, ids = [], []
        for k, p in s.class_masks.items():
            labels = _read_labels(p)
            if labels.shape != shape:
                raise DataError(f"{p}: mask size {labels.shape} differs from the image "
                                f"{s.image.name} size {shape}")
            masks, values = CroppedMasks.from_label_image(labels)
            parts.append(Instances(shape, masks.tight_boxes(), np.ones(len(masks)),
                                   np.full(len(masks), k - 1), masks))
            ids.append(values.astype(np.int64))
        inst = Instances.cat(parts) if parts else Instances.empty(shape)
        im = CocoImage(image_id, s.image.relative_to(root).as_posix(), shape[0], shape[1])
        images.append(im)
        instances[image_id] = inst
        label_ids[image_id] = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    write_coco(out_json, images, categories, instances, segmentation, label_ids)
    return CocoDataset(images, categories, instances, label_ids, 0, Path(out_json))


def coco_to_seed(coco: str | Path | CocoDataset, out_root: str | Path,
                 image_root: str | Path | None = None) -> dict:
    """Write one seed folder per image: ``class{k}.tif`` label images (uint16, or uint32 when
    labels exceed 65535) for every category k, plus ``image.tif`` when the image is found under
    ``image_root`` (default: the COCO file's folder).

    Label values come from ``label_id`` where present, else 1..n in annotation order. Where
    instances of one class overlap, the later annotation wins; the number of such pixels is
    reported. Returns a summary dict (images, instances, overlap_pixels, images_missing).
    """
    import tifffile

    from .io.image import read_image

    dataset = coco if isinstance(coco, CocoDataset) else load_coco(coco)
    if image_root is None and dataset.path is not None:
        image_root = dataset.path.parent
    out_root = Path(out_root)
    summary = {"images": 0, "instances": 0, "overlap_pixels": 0, "images_missing": []}
    used: set[str] = set()
    for im in dataset.images:
        inst = dataset.instances[im.id]
        if len(inst) and inst.masks is None:
            raise DataError(f"image {im.file_name}: annotations have no masks; label images "
                            "need segmentations")
        name = _sample_name(im, used)
        folder = out_root / name
        folder.mkdir(parents=True, exist_ok=True)
        labels_of = dataset.label_ids.get(im.id, np.zeros(len(inst), np.int64))
        for k in range(len(dataset.categories)):
            sel = np.flatnonzero(inst.classes == k)
            values = labels_of[sel] if len(sel) else np.zeros(0, np.int64)
            if len(sel) and (values <= 0).any():
                values = np.arange(1, len(sel) + 1)
            if len(set(values.tolist())) != len(values):
                raise DataError(f"image {im.file_name}, category {dataset.categories[k].name}: "
                                "duplicate label_id values")
            dtype = np.uint16 if (values.max(initial=0) < 2 ** 16) else np.uint32
            label_img = np.zeros(im.size, dtype)
            if len(sel):
                masks = inst.masks[sel]
                idx = masks.label_image(dtype=np.int64)
                summary["overlap_pixels"] += int(masks.areas().sum() - (idx > 0).sum())
                table = np.concatenate([[0], values]).astype(dtype)
                label_img = table[idx]
            tifffile.imwrite(folder / f"class{k + 1}.tif", label_img, compression=None)
        summary["instances"] += len(inst)
        summary["images"] += 1
        src = Path(image_root) / im.file_name if image_root is not None else None
        if src is not None and src.is_file():
            if src.suffix.lower() in (".tif", ".tiff"):
                (folder / "image.tif").write_bytes(src.read_bytes())
            else:
                tifffile.imwrite(folder / "image.tif", read_image(src))
        else:
            summary["images_missing"].append(im.file_name)
    return summary


def _sample_name(im: CocoImage, used: set[str]) -> str:
    p = Path(im.file_name)
    name = p.parent.name if p.parent.name else p.stem
    if name in used:  # two images in one folder: fall back to the image stem, then the id
        name = f"{name}_{p.stem}"
        if name in used:
            name = f"{name}_{im.id}"
    used.add(name)
    return name
