"""Export and import time of each exchange format, on the nuclei labels and on a 4x4 tiling of
them (2,000 instances on a 2048x2048 image). Prints one table; run with

    python benchmarks/interop.py [--shared ../shared]

Each case builds a fresh project (SQLite in a temporary folder), exports it with
``cellseg.core.interop.export_project`` (COCO results: ``Instances.to_coco_results``) and
imports the files into an empty project with ``import_file``; the import is checked to give the
same number of instances back.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from cellseg.core.interop import export_project, import_file
from cellseg.core.project.exchange import create_project
from cellseg.core.project.records import Category
from cellseg.core.project.states import Origin
from cellseg.core.project.store import ProjectStore
from cellseg.core.structures import CroppedMasks, Instances

FILES = {"imagej": "{stem}.zip", "geojson": "{stem}.geojson", "cellpose": "{stem}_cp_masks.png"}


def make_case(root: Path, labels: np.ndarray, image: np.ndarray) -> tuple[Path, Instances]:
    images = root / "images"
    images.mkdir(parents=True)
    tifffile.imwrite(images / "img.tif", image)
    masks, _ = CroppedMasks.from_label_image(labels)
    inst = Instances(labels.shape, masks.tight_boxes(), np.linspace(0.3, 1, len(masks)),
                     np.zeros(len(masks)), masks)
    return images, inst


def new_project(path: Path, images: Path) -> Path:
    create_project(images, path)
    with ProjectStore.open(path) as store:
        store.set_categories([Category(0, 1, "nucleus")])
    return path


def run_case(name: str, labels: np.ndarray, image: np.ndarray) -> list[tuple]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images, inst = make_case(tmp, labels, image)
        src = new_project(tmp / "src.cellseg", images)
        with ProjectStore.open(src) as store:
            store.add_instances(store.images()[0].id, inst, Origin.IMPORTED)
        for fmt in ("imagej", "geojson", "cellpose", "coco-results"):
            out = tmp / f"out_{fmt}"
            t0 = time.perf_counter()
            if fmt == "coco-results":
                out.mkdir()
                path = out / "results.json"
                path.write_text(json.dumps(inst.to_coco_results(1, "img.tif")))
            else:
                with ProjectStore.open(src) as store:
                    export_project(store, out, fmt)
                path = out / FILES[fmt].format(stem="img")
            t_export = time.perf_counter() - t0
            dst = new_project(tmp / f"dst_{fmt}.cellseg", images)
            with ProjectStore.open(dst) as store:
                t0 = time.perf_counter()
                import_file(store, path, fmt)
                t_import = time.perf_counter() - t0
                n = len(store.load(store.images()[0].id))
            assert n == len(inst), (fmt, n, len(inst))
            rows.append((name, fmt, len(inst), t_export, t_import, os.path.getsize(path)))
    return rows


def results_decoding(name: str, labels: np.ndarray) -> tuple:
    """COCO results -> Instances: core.coco's reader (pycocotools decode, a full-image array
    per detection) vs the interop reader (RLE strings straight into compact masks)."""
    from cellseg.core.coco.dataset import CocoCategory, CocoDataset, CocoImage
    from cellseg.core.coco.results import parse_coco_results
    from cellseg.core.interop.coco_results import load_results_for_project

    masks, _ = CroppedMasks.from_label_image(labels)
    inst = Instances(labels.shape, masks.tight_boxes(), np.linspace(0.3, 1, len(masks)),
                     np.zeros(len(masks)), masks)
    dets = inst.to_coco_results(1, "img.tif")
    h, w = labels.shape
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = tmp / "images"
        images.mkdir()
        tifffile.imwrite(images / "img.tif", np.zeros((h, w), np.uint8))
        project = new_project(tmp / "p.cellseg", images)
        path = tmp / "results.json"
        path.write_text(json.dumps(dets))
        t0 = time.perf_counter()
        dataset = CocoDataset([CocoImage(1, "img.tif", h, w)], [CocoCategory(1, "nucleus")], {})
        old = parse_coco_results(json.loads(path.read_text()), dataset)[1]
        t_old = time.perf_counter() - t0
        with ProjectStore.open(project) as store:
            t0 = time.perf_counter()
            new = load_results_for_project(store, path)[0][store.images()[0].id]
            t_new = time.perf_counter() - t0
    assert new.masks == old.masks, "the two readers disagree"
    return name, len(inst), t_old, t_new


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", type=Path,
                   default=Path(os.environ.get("CELLSEG_SHARED",
                                               Path(__file__).resolve().parents[2] / "shared")))
    args = p.parse_args()
    nuclei = args.shared / "data" / "nuclei"
    labels = tifffile.imread(nuclei / "mask2d.tif").astype(np.int32)
    image = tifffile.imread(nuclei / "img2d.tif")
    # 4x4 tiling with distinct labels per tile
    tiles = [[labels + (labels > 0) * (1000 * (4 * i + j)) for j in range(4)] for i in range(4)]
    big = np.block(tiles)
    rows = run_case("nuclei 512x512", labels, image)
    rows += run_case("4x4 tiled 2048x2048", big, np.tile(image, (4, 4)))
    print(f"{'case':22} {'format':13} {'inst':>5} {'export s':>9} {'import s':>9} "
          f"{'inst/s (import)':>15} {'file KB':>8}")
    for name, fmt, n, te, ti, size in rows:
        print(f"{name:22} {fmt:13} {n:>5} {te:>9.3f} {ti:>9.3f} {n / ti:>15.0f} "
              f"{size / 1024:>8.0f}")
    print()
    print("COCO results -> masks, side by side (same file, identical masks):")
    print(f"{'case':22} {'inst':>5} {'core.coco s':>11} {'interop s':>10} {'ratio':>7}")
    for name, lab in (("nuclei 512x512", labels), ("4x4 tiled 2048x2048", big)):
        name, n, t_old, t_new = results_decoding(name, lab)
        print(f"{name:22} {n:>5} {t_old:>11.3f} {t_new:>10.3f} {t_old / t_new:>6.0f}x")


if __name__ == "__main__":
    main()
