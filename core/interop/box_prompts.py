"""Boxes from elsewhere (another detector, a colleague's sheet) to predict masks for.

Three shapes of JSON are read, all with boxes as COCO ``[x, y, w, h]`` in original image pixels:

* a COCO **results** list (``cellseg predict``, Detectron2's evaluator): records with
  ``image_id``, ``bbox``, ``category_id`` (= class index + 1), ``score`` and optionally
  ``file_name``;
* a COCO **annotation** file (``images``, ``annotations``, ``categories``): categories map to
  classes in the order of their ids (Detectron2's contiguous ids), score 1.0;
* a plain **list** of ``{"bbox": [x, y, w, h], "category_id": k}`` (``category_id`` = class + 1,
  optional: without it the model's box head picks the class), ``score`` optional: for a single
  image.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError


@dataclass(frozen=True)
class BoxPrompts:
    """Boxes for one image: ``boxes`` (N, 4) XYXY float32 in image pixels, ``classes`` (N,)
    0-based or None (the model decides), ``scores`` (N,) float32 (1.0 where the file has none)."""

    boxes: np.ndarray
    classes: np.ndarray | None
    scores: np.ndarray


@dataclass(frozen=True)
class BoxFile:
    """Prompts by image: ``by_name`` (file name -> prompts), ``by_id`` (image id -> prompts),
    ``anywhere`` (a plain list: prompts for whichever single image is predicted)."""

    by_name: dict[str, BoxPrompts]
    by_id: dict[int, BoxPrompts]
    anywhere: BoxPrompts | None

    def for_image(self, name: str, image_id: int) -> BoxPrompts:
        """The prompts of one image (by file name first, then id); empty when it has none."""
        if self.anywhere is not None:
            return self.anywhere
        found = self.by_name.get(name)
        if found is None:
            found = self.by_id.get(image_id)
        return found if found is not None else _prompts([], [], [])


def read_box_file(path: str | Path) -> BoxFile:
    """Read a boxes JSON file (shapes: module docstring).

    Raises:
        DataError: one line naming the file and the first thing wrong with it.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read boxes from {path}: {exc}") from exc
    try:
        if isinstance(data, dict):
            return _annotation_file(data)
        if not isinstance(data, list):
            raise ValueError("expected a list of box records or a COCO annotation file")
        if any("image_id" in r or "file_name" in r for r in data):
            return _results_file(data)
        return BoxFile({}, {}, _records(data, offset=1))
    except DataError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"cannot read boxes from {path}: {exc}") from exc


def _xyxy(bbox) -> list[float]:
    x, y, w, h = (float(v) for v in bbox)
    if not np.isfinite([x, y, w, h]).all() or w < 0 or h < 0:
        raise ValueError(f"bad bbox {bbox}: expected finite [x, y, w, h] with w, h >= 0")
    return [x, y, x + w, y + h]


def _prompts(boxes, classes, scores) -> BoxPrompts:
    return BoxPrompts(np.asarray(boxes, np.float32).reshape(-1, 4),
                      None if classes is None else np.asarray(classes, np.int64),
                      np.asarray(scores, np.float32))


def _records(records: list, offset: int, ids: dict | None = None) -> BoxPrompts:
    """Prompts from records whose category ids are class + ``offset`` (or mapped by ``ids``)."""
    given = ["category_id" in r for r in records]
    if any(given) and not all(given):
        raise ValueError("some boxes have a category_id and some do not")
    boxes = [_xyxy(r["bbox"]) for r in records]
    classes = None
    if records and all(given):
        classes = [ids[r["category_id"]] if ids is not None else int(r["category_id"]) - offset
                   for r in records]
        if min(classes) < 0:
            raise ValueError("category_id must be 1 or more (class index + 1)")
    scores = [float(r.get("score", 1.0)) for r in records]
    return _prompts(boxes, classes, scores)


def _results_file(records: list) -> BoxFile:
    by_name: dict[str, list] = {}
    by_id: dict[int, list] = {}
    for r in records:
        if "file_name" in r:
            by_name.setdefault(Path(str(r["file_name"])).name, []).append(r)
        else:
            by_id.setdefault(int(r["image_id"]), []).append(r)
    return BoxFile({k: _records(v, 1) for k, v in by_name.items()},
                   {k: _records(v, 1) for k, v in by_id.items()}, None)


def _annotation_file(data: dict) -> BoxFile:
    cats = sorted(int(c["id"]) for c in data["categories"])
    ids = {c: k for k, c in enumerate(cats)}
    names = {int(im["id"]): Path(str(im["file_name"])).name for im in data["images"]}
    per_image: dict[int, list] = {i: [] for i in names}
    for a in data["annotations"]:
        if a["category_id"] not in ids:
            raise ValueError(f"annotation {a.get('id')} has category_id {a['category_id']} "
                             "that is not among the categories")
        per_image.setdefault(int(a["image_id"]), []).append(a)
    prompts = {i: _records(v, 0, ids) for i, v in per_image.items()}
    return BoxFile({names[i]: p for i, p in prompts.items() if i in names}, prompts, None)
