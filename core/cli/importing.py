"""``cellseg import``: add another tool's annotations or predictions to a project."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "import ImageJ ROIs, QuPath GeoJSON, cellpose masks or COCO results into a project"
DESCRIPTION = """\
  cellseg import PROJECT FILE [--format auto|coco-results|imagej|geojson|cellpose]
                 [--image FILE_NAME] [--category NAME] [--score-threshold S]

coco-results: a COCO results JSON (cellseg predict, Detectron2, MMDetection) as predictions to
  review; detections are matched to project images by file_name, else by image_id; those
  scoring below --score-threshold are left out.
imagej: a .roi or ROI-set .zip (polygon, freehand, traced, rectangle, oval ROIs); the class is
  the ROI name's "<class>-" prefix when it names a project category, else --category.
geojson: QuPath GeoJSON (Polygon/MultiPolygon features; class from classification.name).
cellpose: <image>_seg.npy, <image>_cp_masks.png/.tif, or any instance-label image (StarDist).
Per-image files go to the project image named like them (img2d_seg.npy -> img2d.tif), or to
--image. --category sets the class of every imported instance (created if new). A bad file is
reported in one line and leaves the project unchanged.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..interop import IMPORT_FORMATS

    parser.add_argument("project", metavar="PROJECT", type=Path)
    parser.add_argument("file", metavar="FILE", type=Path)
    parser.add_argument("--format", choices=("auto",) + IMPORT_FORMATS, default="auto",
                        help="file format (default: from the suffix)")
    parser.add_argument("--image", metavar="FILE_NAME",
                        help="project image the file belongs to (per-image formats)")
    parser.add_argument("--category", metavar="NAME", help="class of every imported instance")
    parser.add_argument("--score-threshold", type=float, default=0.0, metavar="S",
                        help="coco-results: leave out detections scoring below S")


def run(args: argparse.Namespace) -> int:
    from ..errors import CellsegError
    from ..interop import guess_format, import_file
    from ..project.store import ProjectStore

    fmt = guess_format(args.file) if args.format == "auto" else args.format
    if fmt == "coco-results" and (args.category or args.image):
        raise CellsegError("--category and --image do not apply to COCO results (they name "
                           "their images and categories)")
    if fmt != "coco-results" and args.score_threshold:
        raise CellsegError(f"--score-threshold applies to COCO results, not to {fmt} files")
    with ProjectStore.open(args.project) as store:
        print(import_file(store, args.file, fmt, image=args.image, category=args.category,
                          score_threshold=args.score_threshold))
    return 0
