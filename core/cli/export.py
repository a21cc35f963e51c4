"""``cellseg export``: write a project's corrected annotations for cellseg and other tools."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "export a project's corrected annotations (COCO, label TIFFs, ImageJ, QuPath, cellpose)"
DESCRIPTION = """\
  cellseg export PROJECT --out FILE_OR_FOLDER
                 [--format coco|labels|imagej|geojson|cellpose] [--segmentation rle|polygon]
                 [--object-type annotation|detection] [--reviewed-only]

coco: one COCO instance file (bbox XYWH, pixel area, iscrowd 0; segmentation as compressed RLE
or polygons) that pycocotools, Detectron2 and CVAT (COCO 1.0) load.
labels (or label-tiff): --out is a folder that gets one sub-folder per image with class1.tif ...
classK.tif instance-label images (and image.tif); napari opens them as Labels layers.
imagej: <image>.zip ROI sets for Fiji's ROI Manager (polygons; holes are lost).
geojson: <image>.geojson FeatureCollections for QuPath (holes and multi-part masks kept).
cellpose: <image>_cp_masks.png label images for cellpose's GUI (overlaps are lost).
Deleted and rejected instances are left out.
"""

FORMATS = ("coco", "labels", "label-tiff", "imagej", "geojson", "cellpose")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("project", metavar="PROJECT", type=Path)
    parser.add_argument("--out", required=True, type=Path, metavar="FILE_OR_FOLDER")
    parser.add_argument("--format", choices=FORMATS, default="coco")
    parser.add_argument("--segmentation", choices=("rle", "polygon"), default="rle",
                        help="COCO segmentation kind")
    parser.add_argument("--object-type", choices=("annotation", "detection"),
                        default="annotation", help="QuPath object type of GeoJSON features")
    parser.add_argument("--reviewed-only", action="store_true",
                        help="only images marked reviewed")


def run(args: argparse.Namespace) -> int:
    from ..project.exchange import export_coco, export_label_tiffs
    from ..project.store import ProjectStore

    with ProjectStore.open(args.project, read_only=True) as store:
        if args.format == "coco":
            ds = export_coco(store, args.out, args.segmentation, args.reviewed_only)
            print(f"wrote {args.out}: {len(ds.images)} images, {ds.num_instances()} instances")
        elif args.format in ("labels", "label-tiff"):
            summary = export_label_tiffs(store, args.out, args.reviewed_only)
            print(f"wrote {summary['images']} folders with {summary['instances']} instances "
                  f"under {args.out}")
        else:
            from ..interop import export_project

            print(export_project(store, args.out, args.format, args.reviewed_only,
                                 args.object_type))
    return 0
