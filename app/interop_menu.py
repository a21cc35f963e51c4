"""File > Import and File > Export: every exchange format of :mod:`cellseg.core.interop` (and
COCO / label TIFFs) on the open project.

``app.actions`` makes the two submenus' actions from :data:`IMPORTS` and :data:`EXPORTS`; each
asks for a file or folder (:func:`ask_import`, :func:`ask_export`) and runs the core function
on the editing controller's project. Imports are all or nothing: a bad file shows its one-line
message in the window's banner and leaves the project unchanged.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QInputDialog

from cellseg.core.errors import CellsegError

# key, menu text, file-dialog filter
IMPORTS = [
    ("coco", "COCO annotations (ground truth)…", "COCO (*.json)"),
    ("coco-results", "COCO results (predictions made elsewhere)…", "COCO results (*.json)"),
    ("imagej", "ImageJ / Fiji ROI set…", "ImageJ ROIs (*.zip *.roi)"),
    ("geojson", "QuPath GeoJSON…", "GeoJSON (*.geojson *.json)"),
    ("cellpose", "cellpose / StarDist masks…",
     "cellpose (*_seg.npy *.png *.tif *.tiff)"),
]
EXPORTS = [
    ("coco", "COCO JSON (CVAT, Detectron2)…"),
    ("labels", "Label TIFFs (napari)…"),
    ("imagej", "ImageJ / Fiji ROI sets…"),
    ("geojson", "QuPath GeoJSON…"),
    ("cellpose", "cellpose masks…"),
]


def import_into_project(window, fmt: str, path: str | Path, score_threshold: float = 0.5
                        ) -> bool:
    """Import ``path`` (format ``fmt``) into the open project and show it; False on error."""
    c = window.editing
    if fmt == "coco":
        return c.import_coco(path)
    if c.store is None:
        window.show_error("open or create a project before importing")
        return False
    from cellseg.core.interop import import_file
    from cellseg.core.interop.common import find_image

    image = None
    if fmt != "coco-results" and c.image_id is not None:
        try:
            find_image(c.store, Path(path))  # named like a project image: that one
        except CellsegError:
            image = c.store.image(c.image_id).file_name  # else the image on screen
    try:
        message = import_file(c.store, path, fmt, image=image, score_threshold=score_threshold)
    except CellsegError as exc:
        window.show_error(str(exc))
        return False
    window.statusBar().showMessage(message, 8000)
    c.reload_current()  # the shown image now has project rows: show them
    return True


def export_project(window, fmt: str, path: str | Path) -> bool:
    """Export the open project as ``fmt`` to ``path`` (a file for COCO, else a folder)."""
    c = window.editing
    if fmt in ("coco", "labels"):
        return c.export(path, "coco" if fmt == "coco" else "label-tiff")
    if c.store is None:
        window.show_error("open or create a project before exporting")
        return False
    from cellseg.core.interop import export_project as export

    try:
        message = export(c.store, path, fmt)
    except (CellsegError, OSError) as exc:
        window.show_error(f"export failed: {exc}")
        return False
    window.statusBar().showMessage(message, 8000)
    return True


def ask_import(window, fmt: str) -> None:
    """File > Import into project > ``fmt``: ask for the file, then :func:`import_into_project`."""
    filt = next(f for k, _, f in IMPORTS if k == fmt)
    path, _ = QFileDialog.getOpenFileName(window, "Import into project", "", filt)
    if not path:
        return
    threshold = 0.0
    if fmt == "coco-results":
        threshold, ok = QInputDialog.getDouble(window, "Import COCO results",
                                               "Leave out detections scoring below:", 0.5,
                                               0.0, 1.0, 2)
        if not ok:
            return
    import_into_project(window, fmt, path, threshold)


def ask_export(window, fmt: str) -> None:
    """File > Export project > ``fmt``: ask where, then :func:`export_project`."""
    if fmt == "coco":
        path, _ = QFileDialog.getSaveFileName(window, "Export COCO", "annotations.json",
                                              "COCO (*.json)")
    else:
        path = QFileDialog.getExistingDirectory(window, f"Export {fmt} files into folder")
    if path:
        export_project(window, fmt, path)
