"""``cellseg eval``: COCO box and mask AP of predictions against a ground-truth file."""
from __future__ import annotations

HELP = "COCO bbox/segm AP (AP50, AP75, APs/m/l, per class) of predictions against ground truth"
DESCRIPTION = """\
Evaluate COCO results (e.g. from `cellseg predict`) against a COCO ground-truth file with
pycocotools and print the AP table (percent, as Detectron2 reports it): AP, AP50, AP75,
APs/APm/APl and per-class AP, for boxes and masks.

COCO caps detections at 100 per image; cell images often have more, so maxDets is raised to
the most detections on any image (at least 100) unless --max-dets is given, and the table says
which value was used. --out writes the table as JSON:
  {"bbox": {"AP": .., "AP50": .., "AP75": .., "APs": .., "APm": .., "APl": ..,
            "per_class": {name: AP}, "max_dets": K}, "segm": {...}}
(undefined values, e.g. APl without large objects, are null)."""


def add_arguments(p) -> None:
    p.add_argument("--gt", required=True, metavar="GT_JSON", help="COCO ground-truth file")
    p.add_argument("--pred", required=True, metavar="RESULTS_JSON",
                   help="COCO results file (a list of detections with image_id, category_id, "
                        "bbox, score, segmentation); a ground-truth style file also works")
    p.add_argument("--out", metavar="METRICS_JSON", help="also write the metrics as JSON")
    p.add_argument("--max-dets", type=int, metavar="K",
                   help="per-image detection cap (default: the most on any image, >= 100)")
    p.add_argument("--iou-type", choices=["bbox", "segm"], action="append", dest="iou_types",
                   help="evaluate only this type (repeatable; default: bbox and segm)")


def run(args) -> int:
    from ..errors import DataError
    from ..evaluation import evaluate

    if args.max_dets is not None and args.max_dets < 1:
        raise DataError(f"--max-dets must be at least 1, got {args.max_dets}")
    result = evaluate(args.gt, args.pred, iou_types=tuple(args.iou_types or ("bbox", "segm")),
                      max_dets=args.max_dets)
    print(result.table())
    if args.out:
        path = result.write_json(args.out)
        print(f"metrics written to {path}")
    return 0
