"""``cellseg export``: write a project's corrected annotations as COCO JSON or label TIFFs."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "export a project's corrected annotations (COCO JSON or label TIFFs)"
DESCRIPTION = """\
  cellseg export PROJECT --out FILE [--format coco|label-tiff] [--segmentation rle|polygon]
                 [--reviewed-only]

coco: one COCO instance file (bbox XYWH, pixel area, iscrowd 0; segmentation as compressed RLE
or polygons) that pycocotools, Detectron2 and CVAT load. label-tiff: --out is a folder that gets
one sub-folder per image with class1.tif ... classK.tif instance-label images (and image.tif).
Deleted and rejected instances are left out.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("project", metavar="PROJECT", type=Path)
    parser.add_argument("--out", required=True, type=Path, metavar="FILE")
    parser.add_argument("--format", choices=("coco", "label-tiff"), default="coco")
    parser.add_argument("--segmentation", choices=("rle", "polygon"), default="rle")
    parser.add_argument("--reviewed-only", action="store_true",
                        help="only images marked reviewed")


def run(args: argparse.Namespace) -> int:
    from ..project.exchange import export_coco, export_label_tiffs
    from ..project.store import ProjectStore

    with ProjectStore.open(args.project, read_only=True) as store:
        if args.format == "coco":
            ds = export_coco(store, args.out, args.segmentation, args.reviewed_only)
            print(f"wrote {args.out}: {len(ds.images)} images, {ds.num_instances()} instances")
        else:
            summary = export_label_tiffs(store, args.out, args.reviewed_only)
            print(f"wrote {summary['images']} folders with {summary['instances']} instances "
                  f"under {args.out}")
    return 0
