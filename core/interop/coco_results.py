"""COCO *results* files as a project's starting annotations.

A results file is a JSON list of detections (``image_id``, ``category_id``, ``score``,
``segmentation`` RLE or polygons, ``bbox``), as ``cellseg predict``, Detectron2's
``COCOEvaluator`` (``coco_instances_results.json``) and MMDetection's ``format_results`` write
it. A lab can run the models on a GPU cluster and review the predictions here without running
them again.

Images are matched by the detection's ``file_name`` (written by ``cellseg predict``; relative
to the project's images folder, or a bare file name), else by ``image_id`` = project image id
(which a project made from the same COCO ground truth shares). ``category_id`` is the project
category's COCO id. Detections scoring below the threshold are dropped; the rest become
instances of origin "model" with their scores, pending review (boxes are the masks' tight
boxes, as the project stores them). Every detection is checked before anything is written.
Masks are decoded from the RLE strings directly into compact masks (no full-image array per
detection), so thousands of detections on a large image import in seconds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from ..coco.checks import read_json, segmentation_rle
from ..coco.dataset import CocoImage
from ..errors import DataError
from ..project.states import Origin, Review
from ..project.rle import decode_rle_strings
from ..project.store import ProjectStore
from ..structures.instances import Instances


@dataclass(frozen=True)
class ResultsImport:
    images: int  # images that received detections
    instances: int
    below_threshold: int


def load_results_for_project(store: ProjectStore, path: str | Path,
                             score_threshold: float = 0.0) -> tuple[dict, int]:
    """Read a COCO results file against the project's images and categories.

    Args:
        store: the open project.
        path: the results JSON.
        score_threshold: detections scoring below it are dropped.

    Returns:
        (project image id -> Instances sorted by score, number of detections dropped).
    """
    path = Path(path)
    data = read_json(path)  # DataError on a missing, truncated or invalid file
    if isinstance(data, dict) and "annotations" in data:
        data = data["annotations"]
    if not isinstance(data, list):
        raise DataError(f"{path}: a COCO results file is a JSON list of detections")
    images = store.images()
    if not images:
        raise DataError(f"project {store.path} has no images")
    cats = store.categories()
    by_name = {}
    for im in images:
        by_name.setdefault(im.file_name, im.id)
        by_name.setdefault(PurePosixPath(im.file_name).name, im.id)
    ids = {im.id for im in images}
    remapped = []
    for i, det in enumerate(data):
        if not isinstance(det, dict):
            raise DataError(f"{path}: detection #{i} is not an object")
        name = det.get("file_name")
        if isinstance(name, str):
            posix = PurePosixPath(name.replace("\\", "/"))
            image_id = by_name.get(posix.as_posix()) or by_name.get(posix.name)
            if image_id is None:
                raise DataError(f"{path}: detection #{i}: image {name!r} is not in the project")
        else:
            image_id = det.get("image_id")
            if image_id not in ids:
                raise DataError(f"{path}: detection #{i}: image_id {image_id!r} is not a "
                                "project image id (and the detection has no file_name)")
        if "segmentation" not in det:
            raise DataError(f"{path}: detection #{i} has no segmentation; a project needs "
                            "masks")
        remapped.append(dict(det, image_id=image_id))
    class_of = {c.coco_id: c.class_index for c in cats}
    records = {im.id: CocoImage(im.id, im.file_name, im.height, im.width) for im in images}
    per_image: dict[int, list[tuple[dict, dict]]] = {}
    for i, det in enumerate(remapped):
        where = f"{path}: detection #{i}"
        if det.get("category_id") not in class_of:
            raise DataError(f"{where}: unknown category_id {det.get('category_id')!r} (the "
                            f"project's are {sorted(class_of)})")
        score = det.get("score", 1.0)
        if isinstance(score, bool) or not isinstance(score, (int, float)) \
                or not math.isfinite(score):
            raise DataError(f"{where}: score must be a number, got {score!r}")
        im = records[det["image_id"]]
        if "segmentation" not in det:
            raise DataError(f"{where}: a detection needs a 'segmentation' (mask)")
        # validated against the image (size, alphabet, polygon bounds); polygons become RLE
        rle = segmentation_rle(det["segmentation"], im.size, f"{where} (image id {im.id})")
        per_image.setdefault(im.id, []).append((det, rle))
    dropped = 0
    out = {}
    for image_id, dets in per_image.items():
        scores = np.array([float(d.get("score", 1.0)) for d, _ in dets], np.float32)
        keep = np.flatnonzero(scores >= score_threshold)
        dropped += len(dets) - len(keep)
        if len(keep) == 0:
            continue
        im = records[image_id]
        masks = decode_rle_strings([dets[k][1] for k in keep], im.size)
        classes = np.array([class_of[dets[k][0]["category_id"]] for k in keep], np.int64)
        inst = Instances(im.size, masks.tight_boxes(), scores[keep], classes, masks)
        out[image_id] = inst.sorted_by_score()
    return out, dropped


def import_coco_results(store: ProjectStore, path: str | Path, score_threshold: float = 0.0
                        ) -> ResultsImport:
    """Add a results file's detections (above ``score_threshold``) as model predictions to
    review, in one transaction (a bad file leaves the project unchanged)."""
    if not 0.0 <= score_threshold <= 1.0:
        raise DataError(f"score threshold must be in [0, 1], got {score_threshold}")
    per_image, dropped = load_results_for_project(store, path, score_threshold)
    n = 0
    with store.transaction():
        for image_id, inst in per_image.items():
            store.add_instances(image_id, inst, Origin.MODEL,
                                reviews=[Review.PENDING] * len(inst))
            n += len(inst)
    return ResultsImport(len(per_image), n, dropped)
