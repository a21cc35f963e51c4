"""What the checks on untrusted input cost: COCO masks and image reading, new vs old, side by side.

    .venv/bin/python benchmarks/input_checks.py [--size 2048] [--cells 1000] [--repeat 5]

COCO rows: decoding one image's compressed RLE masks as ``load_coco`` did before (pycocotools'
dense decode, 64 masks at a time, then cropping) and as it does now (checks of every counts string
plus the vectorised decoder of ``core.project.rle``), and a whole ``load_coco``. Image rows:
``np.fromfile`` + ``cv2.imdecode`` (the old PNG path) vs ``read_image`` (magic bytes, header,
chunk walk, pixel limit, then the same decode), and the header alone. Times are medians of
``--repeat`` runs; peak memory is what tracemalloc sees (numpy and pycocotools buffers). Prints
a table.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np


def synthetic_labels(size: int, cells: int, seed: int = 0) -> np.ndarray:
    """``cells`` elliptic nuclei (8-30 px radii) as an instance-label image."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.int32)
    centres = rng.uniform(20, size - 20, (cells, 2)).astype(int)
    axes = rng.uniform(8, 30, (cells, 2)).astype(int)
    for i in range(cells):  # set-up only, not measured
        cv2.ellipse(labels, tuple(map(int, centres[i])), tuple(map(int, axes[i])),
                    float(rng.uniform(0, 180)), 0, 360, i + 1, -1)
    return labels


def measure(fn, repeat: int) -> tuple[float, float]:
    """(median ms, peak MB) of ``fn``."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return statistics.median(times) * 1000, peak / 2 ** 20


def main(argv=None) -> int:
    from cellseg.core.coco.checks import decode_masks, segmentation_rle
    from cellseg.core.coco.dataset import CocoImage, load_coco
    from cellseg.core.coco.writer import write_coco
    from cellseg.core.io import read_header, read_image
    from cellseg.core.structures import CroppedMasks, Instances

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--cells", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    size = args.size
    labels = synthetic_labels(size, args.cells)
    masks, ids = CroppedMasks.from_label_image(labels)
    n = len(ids)
    inst = Instances((size, size), masks.tight_boxes(), np.ones(n), np.zeros(n, np.int64), masks)
    tmp = Path(tempfile.mkdtemp())
    coco = write_coco(tmp / "gt.json", [CocoImage(1, "img.png", size, size)], ["cell"], [inst])
    rles = [{"size": [size, size], "counts": r["counts"]} for r in masks.to_rle()]
    wheres = [f"annotation {i}" for i in range(n)]

    def new_decode():
        checked = [segmentation_rle(r, (size, size), w) for r, w in zip(rles, wheres)]
        return decode_masks(checked, (size, size), wheres)

    assert new_decode() == CroppedMasks.from_rle(rles, image_size=(size, size))
    image = (labels > 0).astype(np.uint16) * 2000 + 300
    cv2.imwrite(str(tmp / "img.png"), image)

    rows = [
        (f"COCO masks: {n} cells, {size}x{size}",
         lambda: CroppedMasks.from_rle(rles, image_size=(size, size)), new_decode),
        ("load_coco (whole file)", None, lambda: load_coco(coco)),
        (f"PNG {size}x{size} 16-bit: decode",
         lambda: cv2.imdecode(np.fromfile(str(tmp / "img.png"), np.uint8), cv2.IMREAD_UNCHANGED),
         lambda: read_image(tmp / "img.png")),
        ("PNG header only (read_header)", None, lambda: read_header(tmp / "img.png")),
    ]
    print(f"{'case':40} {'old ms':>9} {'new ms':>9} {'old/new':>8} {'old MB':>8} {'new MB':>8}")
    for name, old, new in rows:
        t_new, m_new = measure(new, args.repeat)
        if old is None:
            print(f"{name:40} {'':>9} {t_new:9.1f} {'':>8} {'':>8} {m_new:8.1f}")
            continue
        t_old, m_old = measure(old, args.repeat)
        print(f"{name:40} {t_old:9.1f} {t_new:9.1f} {t_old / t_new:8.2f} {m_old:8.1f} "
              f"{m_new:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
