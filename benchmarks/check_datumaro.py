"""Check that a cellseg COCO export loads in CVAT's dataset framework (datumaro) intact.

datumaro pins older pillow and OpenCV than cellseg uses, so it is not in the test extra; run
this in a throwaway venv (only numpy, tifffile and datumaro are needed here):

    python3 -m venv /tmp/dmvenv && /tmp/dmvenv/bin/pip install datumaro tifffile
    cellseg project create IMAGES --out /tmp/n.cellseg --import GT.json   # or any project
    cellseg export /tmp/n.cellseg --out /tmp/n_rle.json
    cellseg export /tmp/n.cellseg --out /tmp/n_poly.json --segmentation polygon
    /tmp/dmvenv/bin/python benchmarks/check_datumaro.py /tmp/n_rle.json /tmp/n_poly.json \\
        --labels ../shared/data/nuclei/mask2d.tif [--images-root IMAGES]

For each file it imports the COCO file with ``Dataset.import_from(path, "coco_instances")``
(what CVAT's "COCO 1.0" upload runs) from CVAT's layout ``annotations/instances_default.json``,
both as that file and as the dataset folder, and prints a table: annotations, categories, and how
the areas compare with the label image's instances: RLE masks pixel for pixel; polygons both by
the shoelace area datumaro reports (smaller: cellseg's COCO polygons run 1/4 px inside the pixel
edges so that COCO rasterisers give the mask back) and rasterised as COCO/CVAT do (the check).
Exit status 1 if any check fails.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np


def label_areas(path: Path) -> tuple[np.ndarray, dict]:
    import tifffile

    labels = tifffile.imread(path)
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    return labels, dict(zip(ids.tolist(), counts.tolist()))


def check(path: Path, layout: str, labels, areas: dict, images_root: Path | None) -> dict:
    import datumaro as dm
    from datumaro.components.annotation import AnnotationType

    with tempfile.TemporaryDirectory() as tmp:
        # datumaro finds a COCO dataset's root from the annotations/ folder the file lies in,
        # and its images in images/<subset>/ (CVAT's COCO 1.0 export layout)
        root = Path(tmp) / "export"
        (root / "annotations").mkdir(parents=True)
        (root / "images" / "default").mkdir(parents=True)
        if images_root is not None:
            for im in json.loads(path.read_text())["images"]:
                target = root / "images" / "default" / im["file_name"]
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(images_root / im["file_name"], target)
        ann_file = root / "annotations" / "instances_default.json"
        shutil.copy(path, ann_file)
        source = root if layout == "folder" else ann_file
        dataset = dm.Dataset.import_from(str(source), "coco_instances")
        items = list(dataset)
        anns = [a for item in items for a in item.annotations]
        cats = dataset.categories()[AnnotationType.label]
        # datumaro gives each COCO annotation a shape (mask, or one polygon per part) and a
        # bbox, all with the annotation's id
        shapes = [a for a in anns if a.type.name in ("mask", "polygon")]
        boxes = [a for a in anns if a.type.name == "bbox"]
        kinds = sorted({a.type.name for a in shapes})
        area_of: dict = {}
        for a in shapes:
            area_of[a.id] = area_of.get(a.id, 0.0) + float(a.get_area())
        got = sorted(area_of.values())
        raster = sorted(_raster_areas(shapes, items[0]).values()) if kinds == ["polygon"] \
            else got
        want = sorted(float(v) for v in areas.values()) if areas else got
        exact_masks = None
        if labels is not None and kinds == ["mask"]:
            # every datumaro mask equals one label's pixels
            by_area: dict = {}
            for lab, n in areas.items():
                by_area.setdefault(n, []).append(lab)
            exact_masks = 0
            for a in shapes:
                img = a.image.astype(bool)
                for lab in by_area.get(int(img.sum()), []):
                    if np.array_equal(img, labels == lab):
                        exact_masks += 1
                        break
        rel = max(abs(g - w) / w for g, w in zip(got, want)) if len(got) == len(want) else None
        rel_raster = max(abs(g - w) / w for g, w in zip(raster, want)) \
            if len(raster) == len(want) else None
        return {"file": path.name, "layout": layout, "items": len(items),
                "annotations": len(area_of), "bboxes": len(boxes), "categories": [c.name for c in cats.items],
                "kinds": ",".join(kinds), "max_area_error": rel, "raster_error": rel_raster,
                "exact_masks": exact_masks}


def _raster_areas(polygons, item) -> dict:
    """Pixels whose centres the polygons cover (pycocotools, as COCO and CVAT rasterise)."""
    from pycocotools import mask as mask_util

    h, w = item.media.size if getattr(item, "media", None) is not None and item.media.size \
        else (None, None)
    if h is None:
        xs = [max(a.points[0::2]) for a in polygons]
        ys = [max(a.points[1::2]) for a in polygons]
        h, w = int(max(ys)) + 2, int(max(xs)) + 2
    out: dict = {}
    for a in polygons:
        out.setdefault(a.id, []).append(list(map(float, a.points)))
    return {k: float(mask_util.area(mask_util.merge(mask_util.frPyObjects(v, h, w))))
            for k, v in out.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("coco", nargs="+", type=Path, help="COCO files written by cellseg export")
    p.add_argument("--labels", type=Path, help="label image the annotations came from")
    p.add_argument("--images-root", type=Path, help="folder the file_names are relative to "
                   "(copied into the dataset; optional)")
    args = p.parse_args()
    import datumaro

    labels, areas = (label_areas(args.labels) if args.labels else (None, None))
    print(f"datumaro {datumaro.__version__}")
    print(f"{'file':18} {'layout':6} {'items':>5} {'anns':>5} {'boxes':>5} {'kinds':8} "
          f"{'shoelace err':>12} {'raster err':>10} {'exact masks':>11}  categories")
    ok = True
    for path in args.coco:
        expected = len(json.loads(path.read_text())["annotations"])
        for layout in ("file", "folder"):
            r = check(path, layout, labels, areas if areas else None, args.images_root)
            err = "-" if r["max_area_error"] is None else f"{r['max_area_error']:.4%}"
            rerr = "-" if r["raster_error"] is None else f"{r['raster_error']:.4%}"
            exact = "-" if r["exact_masks"] is None else str(r["exact_masks"])
            print(f"{r['file']:18} {layout:6} {r['items']:>5} {r['annotations']:>5} "
                  f"{r['bboxes']:>5} "
                  f"{r['kinds']:8} {err:>12} {rerr:>10} {exact:>11}  {','.join(r['categories'])}")
            ok &= r["annotations"] == expected == r["bboxes"]
            if areas is not None:
                ok &= r["raster_error"] is not None and r["raster_error"] < 0.01
            if r["exact_masks"] is not None:
                ok &= r["exact_masks"] == expected
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
