"""Exchange with the tools labs already use (Qt-free): one module per format.

========  ==============================  ============================================
format    reads                           writes (one file per image, into a folder)
========  ==============================  ============================================
imagej    ``.roi`` / ROI-set ``.zip``     ``<image>.zip`` polygon ROIs (holes lost)
geojson   QuPath GeoJSON                  ``<image>.geojson`` FeatureCollection
cellpose  ``*_seg.npy``, label images     ``<image>_cp_masks.png`` (overlaps lost)
coco-results  COCO results JSON           (``cellseg predict`` writes them)
========  ==============================  ============================================

COCO ground truth and label TIFFs stay in :mod:`cellseg.core.project.exchange`. The format
libraries (roifile, shapely, geojson) are imported when a format is used, so the command line
and the app start without them. Every import is checked before the first write and is one
transaction: a bad file leaves the project as it was.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import DataError

IMPORT_FORMATS = ("coco-results", "imagej", "geojson", "cellpose")
EXPORT_FORMATS = ("imagej", "geojson", "cellpose")

# file suffix -> format, for callers that guess (the app's file dialogs, ``--format auto``)
_BY_SUFFIX = {".roi": "imagej", ".zip": "imagej", ".geojson": "geojson", ".npy": "cellpose",
              ".png": "cellpose", ".tif": "cellpose", ".tiff": "cellpose",
              ".json": "coco-results"}


def guess_format(path: str | Path) -> str:
    """The import format a file's suffix suggests (``.json`` holding GeoJSON -> geojson)."""
    path = Path(path)
    fmt = _BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"cannot tell the format of {path.name}; choose one of "
                        f"{', '.join(IMPORT_FORMATS)}")
    if fmt == "coco-results" and path.is_file():
        with open(path, "rb") as fh:
            head = fh.read(4096).decode("utf-8", "replace")
        if '"FeatureCollection"' in head or '"Feature"' in head:
            return "geojson"
    return fmt


def import_file(store, path: str | Path, fmt: str, image: str | None = None,
                category: str | None = None, score_threshold: float = 0.0) -> str:
    """Import a foreign file into an open project; returns a one-line summary.

    Args:
        store: the open :class:`~cellseg.core.project.store.ProjectStore`.
        path: the file.
        fmt: one of :data:`IMPORT_FORMATS`.
        image: the project image (``file_name``) for per-image formats; by default the image
            whose name the file's name starts with (``img2d_seg.npy`` -> ``img2d.tif``).
        category: class of every imported instance (created if new); by default the file's
            class names (ImageJ: the ``<class>-`` name prefix; GeoJSON: ``classification``).
        score_threshold: for ``coco-results``, drop detections scoring below it.
    """
    from .common import find_image, store_imported

    path = Path(path)
    if fmt == "coco-results":
        from .coco_results import import_coco_results

        res = import_coco_results(store, path, score_threshold)
        return (f"{res.instances} detections on {res.images} images imported for review"
                f" ({res.below_threshold} below the score threshold {score_threshold:g} "
                "left out)")
    if fmt not in IMPORT_FORMATS:
        raise DataError(f"unknown import format {fmt!r}; choose one of "
                        f"{', '.join(IMPORT_FORMATS)}")
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    record = find_image(store, path, image)
    if fmt == "imagej":
        from .imagej import read_roi_set

        imported = read_roi_set(path, record.image_size, [c.name for c in store.categories()])
        new_categories = False  # ROI names are free text ("0034-0120"), not classes
    elif fmt == "geojson":
        from .geojson import read_geojson

        imported = read_geojson(path, record.image_size)
        new_categories = True
    else:
        from .cellpose import read_cellpose

        imported = read_cellpose(path)
        new_categories = True
    result = store_imported(store, record, imported, category=category,
                            new_categories=new_categories)
    return f"imported {result.summary()}"


def export_project(store, out: str | Path, fmt: str, reviewed_only: bool = False,
                   object_type: str = "annotation") -> str:
    """Export the project's exportable instances (deleted and rejected ones left out) into
    the folder ``out``, one file per image with instances; returns a one-line summary.

    Args:
        store: the open project.
        out: a folder (created).
        fmt: one of :data:`EXPORT_FORMATS`.
        reviewed_only: only images marked reviewed.
        object_type: GeoJSON's QuPath ``objectType`` (``annotation`` or ``detection``).
    """
    from .common import image_stem, out_folder

    if fmt not in EXPORT_FORMATS:
        raise DataError(f"unknown export format {fmt!r}; choose one of "
                        f"{', '.join(EXPORT_FORMATS)}")
    out = out_folder(Path(out))
    names = [c.name for c in store.categories()]
    files = instances = holes = parts = overlap = 0
    used: set[str] = set()
    for ex in store.exportable(reviewed_only):
        if len(ex.instances) == 0:
            continue
        if int(ex.instances.classes.max()) >= len(names):
            raise DataError(f"project {store.path}: image {ex.image.file_name} has class "
                            f"{int(ex.instances.classes.max()) + 1} but only {len(names)} "
                            "categories are defined")
        stem = image_stem(ex.image.file_name)
        if stem in used:  # same name in two sub-folders
            stem = f"{stem}_{ex.image.id}"
        used.add(stem)
        uids = ex.uids.tolist()
        if fmt == "imagej":
            from .imagej import write_roi_set

            res = write_roi_set(out / f"{stem}.zip", ex.instances, names, uids)
            holes, parts = holes + res.lost_holes, parts + res.lost_parts
        elif fmt == "geojson":
            from .geojson import write_geojson

            write_geojson(out / f"{stem}.geojson", ex.instances, names, uids,
                          ex.image.file_name, object_type)
        else:
            from .cellpose import write_cp_masks

            overlap += write_cp_masks(out / stem, ex.instances)[1]
        files += 1
        instances += len(ex.instances)
    text = f"wrote {files} {fmt} files with {instances} instances into {out}"
    if holes or parts:
        text += (f"; ImageJ polygons cannot hold holes ({holes} instances lost theirs) or "
                 f"several parts ({parts} instances kept only their largest)")
    if overlap:
        text += (f"; a label image has one instance per pixel: {overlap} overlapping pixels "
                 "went to the later instance")
    return text
