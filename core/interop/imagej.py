"""ImageJ / Fiji ROI sets (``.zip`` of ``.roi`` files, or one ``.roi``) through ``roifile``.

Export: one polygon ROI per instance along the outer edges of its pixels, of ImageJ's *traced*
polygon type (what the wand tool makes: integer vertices on pixel corners, so ImageJ's mask and
area of the ROI are exactly the instance's pixels). The ROI name is
``<class>-<id>`` (class name, project instance id), the stroke colour is the class colour.
An ImageJ polygon is one ring: **holes and all but the largest part of a mask are lost** (the
export counts them). Import: polygon, freehand, traced (and rectangle/oval) ROIs become
instances; the class comes from the ROI name's ``<class>-`` prefix when it names a project
category, else from the caller's category; lines, points and composite ROIs are left out and
counted.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError
from ..structures.instances import Instances
from .common import ImportedImage, class_colour
from .polygons import masks_from_rings, trace_mask


@dataclass(frozen=True)
class RoiExport:
    rois: int
    lost_holes: int  # instances whose holes an ImageJ polygon cannot carry
    lost_parts: int  # instances with more than one part (only the largest is written)


def roi_name(class_name: str, uid: int) -> str:
    return f"{class_name}-{int(uid)}"


def write_roi_set(path: str | Path, instances: Instances, class_names: Sequence[str],
                  uids: Sequence[int]) -> RoiExport:
    """Write an ImageJ ROI set (a ``.zip`` Fiji's ROI Manager opens).

    Args:
        path: the ``.zip`` to write (replaced if it exists: roifile would append).
        instances: one image's instances, with masks.
        class_names: category names by class index.
        uids: an id per instance, used in the ROI names.

    Returns:
        Counts of what was written and what the format lost.
    """
    import roifile

    path = Path(path)
    rois, holes, parts = [], 0, 0
    for i in range(len(instances)):
        traced = trace_mask(instances.masks, i)
        if not traced:
            continue
        holes += any(p.holes for p in traced)
        parts += len(traced) > 1
        cls = int(instances.classes[i])
        roi = roifile.ImagejRoi.frompoints(traced[0].exterior.astype(np.int32),
                                           name=roi_name(class_names[cls], uids[i]))
        roi.roitype = roifile.ROI_TYPE.TRACED  # a polygon along pixel edges
        roi.stroke_color = bytes((255, *class_colour(cls)))
        rois.append(roi)
    if not rois:
        raise DataError(f"nothing to write to {path}: the image has no instances")
    tmp = path.with_name(f".{path.name}.tmp.zip")
    tmp.unlink(missing_ok=True)
    try:
        roifile.roiwrite(tmp, rois)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return RoiExport(len(rois), holes, parts)


_AREA_TYPES = ("POLYGON", "FREEHAND", "TRACED", "RECT", "OVAL")


def read_roi_set(path: str | Path, image_size: tuple[int, int],
                 class_names: Sequence[str]) -> ImportedImage:
    """Read a ``.roi`` or ROI-set ``.zip`` as one image's instances.

    Args:
        path: the file.
        image_size: (H, W) of the image the ROIs belong to (ROIs are clipped to it).
        class_names: the project's category names; a ROI named ``<name>-...`` with one of them
            gets that class, any other ROI none (the caller's default).

    Returns:
        The instances (ROIs covering no pixel centre, lines, points and composite shapes are
        left out and counted in ``skipped``).
    """
    import roifile

    path = Path(path)
    if not path.is_file():
        raise DataError(f"ROI file not found: {path}")
    try:
        found = roifile.roiread(path)
    except Exception as exc:  # roifile raises ValueError/struct.error/zipfile errors
        raise DataError(f"{path}: not an ImageJ ROI file or ROI set ({exc})") from exc
    found = found if isinstance(found, list) else [found]
    if not found:
        raise DataError(f"{path}: the ROI set is empty")
    rings, names, skipped = [], [], {}
    known = sorted(class_names, key=len, reverse=True)
    for roi in found:
        kind = roifile.ROI_TYPE(roi.roitype).name
        if kind not in _AREA_TYPES or roi.composite:
            what = "composite" if roi.composite else kind.lower()
            skipped[what] = skipped.get(what, 0) + 1
            continue
        coords = np.asarray(roi.coordinates(), np.float64)
        if coords.ndim != 2 or len(coords) < 3 or not np.isfinite(coords).all():
            skipped["degenerate"] = skipped.get("degenerate", 0) + 1
            continue
        rings.append([(coords, [])])
        names.append(next((n for n in known if (roi.name or "").startswith(f"{n}-")), None))
    masks, covers = masks_from_rings(rings, image_size)
    if not covers.all():
        skipped["covering no pixel"] = int((~covers).sum())
    keep = np.flatnonzero(covers)
    return ImportedImage(masks[keep], [names[k] for k in keep],
                         skipped=[f"{n} {what} ROI{'s' if n > 1 else ''}"
                                  for what, n in skipped.items()])
