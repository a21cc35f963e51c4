"""Each project image's review status and cell count, from the project alone.

The image list, the Review dock and the Cells column all read these numbers, so what the window
says after an edit, after reopening or for an image never shown is the same count from the same
rows (deleted and rejected instances are not cells; an empty mask is not a cell either).
"""
from __future__ import annotations

from dataclasses import dataclass

from .store import ProjectStore


@dataclass(frozen=True)
class ImageStatus:
    status: str  # "reviewed" | "edited" | "annotated" (imported or stored, untouched) | "not run"
    cells: int | None  # instances present and not rejected; None when the project has none yet


def image_statuses(store: ProjectStore, image_id: int | None = None) -> dict[str, ImageStatus]:
    """Status of every project image (or of one) by file name, in one query.

    Args:
        store: an open project.
        image_id: only this image (after an edit), or None for all.

    Returns:
        ``{file_name: ImageStatus}`` (file names relative to the images folder).
    """
    where = "" if image_id is None else f"WHERE im.id = {int(image_id)} "
    rows = store._conn.execute(
        "SELECT im.file_name, im.reviewed, COUNT(i.id), "
        "SUM(i.deleted = 0 AND i.review != 'rejected' AND i.area > 0), "
        "SUM(i.deleted = 1 OR i.origin IN ('edited', 'drawn', 'assisted') OR i.review != 'pending') "
        "FROM images im LEFT JOIN instances i ON i.image_id = im.id " + where +
        "GROUP BY im.id").fetchall()
    out = {}
    for name, reviewed, stored, cells, touched in rows:
        if reviewed:
            status = "reviewed"
        elif touched:
            status = "edited"
        elif stored:
            status = "annotated"
        else:
            status = "not run"
        out[name] = ImageStatus(status, int(cells or 0) if (stored or reviewed) else None)
    return out


def cells(ann) -> int:
    """Cells of an image being edited, counted as :func:`image_statuses` counts them.

    Args:
        ann: the image's ``ImageAnnotations`` (deleted instances are already gone from it).

    Returns:
        Instances neither rejected nor empty.
    """
    from .states import Review

    return int(((ann.reviews != Review.REJECTED) & (ann.masks.areas() > 0)).sum())
