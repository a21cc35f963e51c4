"""An instance as a row of the project's ``instances`` table, and the SQL that writes one.

Origins and review states are stored by name (``"model"``, ``"accepted"``...), masks as COCO
compressed RLE strings of their tight window, with the window and area beside them so that
counts and exports need no decoding.
"""
from __future__ import annotations

from ..structures.masks import CroppedMasks
from .states import Origin, Review

ORIGIN_NAMES = {o: o.name.lower() for o in Origin}
REVIEW_NAMES = {r: r.name.lower() for r in Review}
ORIGIN_OF = {v: k for k, v in ORIGIN_NAMES.items()}
REVIEW_OF = {v: k for k, v in REVIEW_NAMES.items()}

COLUMNS = "(image_id, id, class_index, score, origin, review, x0, y0, x1, y1, area, rle, created)"
INSERT_SQL = (f"INSERT INTO instances {COLUMNS[:-1]}, label_id) "
              "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
# an edit re-creates a row undone earlier, or updates one; ``created`` keeps its first value
UPSERT_SQL = (f"INSERT INTO instances {COLUMNS} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1) "
              "ON CONFLICT(id) DO UPDATE SET class_index = excluded.class_index, "
              "score = excluded.score, origin = excluded.origin, review = excluded.review, "
              "x0 = excluded.x0, y0 = excluded.y0, x1 = excluded.x1, y1 = excluded.y1, "
              "area = excluded.area, rle = excluded.rle, deleted = 0")


def instance_rows(image_id, ids, masks: CroppedMasks, classes, scores, origins, reviews
                  ) -> list[tuple]:
    """One ``instances`` row per mask, without ``created`` and ``label_id`` (the callers add
    what they need: see INSERT_SQL and UPSERT_SQL)."""
    rles = masks.to_rle()
    windows = masks.windows.tolist()
    areas = masks.areas().tolist()
    return [(int(image_id), int(i), int(c), float(s), ORIGIN_NAMES[Origin(o)],
             REVIEW_NAMES[Review(r)], *win, int(a), rle["counts"])
            for i, c, s, o, r, win, a, rle in zip(ids, classes, scores, origins, reviews,
                                                   windows, areas, rles)]
