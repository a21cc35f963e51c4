"""Post-processing timings for 1k / 3k / 10k detections on one image (CPU).

    .venv/bin/python benchmarks/postprocess.py [--sizes 1000 3000 10000] [--repeat 3]
                                               [--reference-max 10000]

Synthetic detector-like output: round cells with ~15 jittered detections each (boxes and
elliptic masks, 4 classes), on a square image sized so cell density stays that of a crowded
microscopy field. Columns:

* Soft-NMS (linear, box IoU): the vectorised ``soft_nms`` vs the straightforward loop
  (``soft_nms_reference``: a Python step per (pick, box) pair), with their speed-up; results are
  checked identical. Sizes above ``--reference-max`` skip the (minutes-long) loop.
* Soft-NMS on mask IoU (vectorised).
* WBF of two models with N/2 detections each: boxes only through the ``ensemble-boxes``
  package, and ours with cluster membership plus mask fusion.
* COCO evaluation (bbox + segm, pycocotools, maxDets = N) of the N detections against the cells.
* ``compose`` with Soft-NMS + WBF on the two models: what a GUI toggle costs.

Times are the best of ``--repeat`` runs (the loop reference: one run).
"""
from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np


def detections(n: int, seed: int, cells=None, size=None):
    """n detections around cells (15 per cell on average): Instances with elliptic masks."""
    from cellseg.core.structures import CroppedMasks, Instances
    from cellseg.core.structures.masks import _window_coordinates

    rng = np.random.default_rng(seed)
    n_cells = max(n // 15, 1)
    size = size or int(np.sqrt(n_cells) * 60)  # ~60x60 px of image per cell
    if cells is None:
        cells = (rng.uniform(20, size - 20, (n_cells, 2)), rng.uniform(8, 18, n_cells))
    centre, radius = cells
    k = rng.integers(0, len(centre), n)
    c = centre[k] + rng.normal(0, 2, (n, 2))
    half = radius[k, None] * rng.uniform(0.85, 1.15, (n, 2))
    boxes = np.concatenate([c - half, c + half], 1).clip(0, size).astype(np.float32)
    windows = np.concatenate([np.floor(boxes[:, :2]), np.ceil(boxes[:, 2:])], 1).astype(np.int64)
    idx, ys, xs = _window_coordinates(windows)
    ctr = (boxes[idx, :2] + boxes[idx, 2:]) / 2
    hw = np.maximum((boxes[idx, 2:] - boxes[idx, :2]) / 2, 1e-3)
    inside = ((xs + 0.5 - ctr[:, 0]) / hw[:, 0]) ** 2 + ((ys + 0.5 - ctr[:, 1]) / hw[:, 1]) ** 2 <= 1
    starts = np.concatenate([[0], np.cumsum((windows[:, 2] - windows[:, 0])
                                            * (windows[:, 3] - windows[:, 1]))])
    masks = CroppedMasks((size, size), windows, inside, starts.astype(np.int64))
    inst = Instances((size, size), boxes, rng.random(n), rng.integers(0, 4, n), masks)
    return inst, cells, size


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main(argv=None) -> int:
    from cellseg.core.coco.dataset import CocoCategory, CocoImage
    from cellseg.core.coco.writer import coco_dict
    from cellseg.core.evaluation import evaluate
    from cellseg.core.postprocess import Settings, compose, soft_nms, weighted_boxes_fusion
    from cellseg.core.postprocess.soft_nms import soft_nms_reference
    from cellseg.core.structures import Instances

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--reference-max", type=int, default=10000,
                   help="run the loop reference only up to this many boxes")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    from ensemble_boxes import weighted_boxes_fusion as package_wbf

    print(f"CPU: {platform.processor() or platform.machine()}, numpy {np.__version__}; "
          f"best of {args.repeat}")
    header = ("boxes", "image", "SoftNMS loop", "SoftNMS ours", "speed-up", "same",
              "SoftNMS masks", "WBF package", "WBF+masks ours", "eval bbox+segm", "compose")
    print(" | ".join(f"{h:>14}" for h in header))
    for n in args.sizes:
        a, cells, size = detections(n // 2, 1)
        b, _, _ = detections(n - n // 2, 2, cells, size)
        both = Instances.cat([a, b])
        t_ours, ours = best(lambda: soft_nms(both.boxes, both.scores, both.classes), args.repeat)
        if n <= args.reference_max:
            t = time.perf_counter()
            ref = soft_nms_reference(both.boxes, both.scores, both.classes)
            t_ref = time.perf_counter() - t
            same = (np.array_equal(ours[0], ref[0]) and np.array_equal(ours[1], ref[1]))
            ref_cols = (f"{t_ref:.3f} s", f"{t_ref / t_ours:.0f}x", "yes" if same else "NO")
        else:
            ref_cols = ("skipped", "-", "-")
        t_mask, _ = best(lambda: soft_nms(both.boxes, both.scores, both.classes,
                                          masks=both.masks), args.repeat)
        scale = np.array([size, size, size, size], np.float64)
        t_pkg, _ = best(lambda: package_wbf([m.boxes / scale for m in (a, b)],
                                            [m.scores for m in (a, b)],
                                            [m.classes for m in (a, b)]), args.repeat)
        t_wbf, _ = best(lambda: weighted_boxes_fusion([a, b]), args.repeat)
        gt_inst, _, _ = detections(len(cells[0]), 3, cells, size)  # one "true" box per call
        gt = coco_dict([CocoImage(1, "synthetic.tif", size, size)],
                       [CocoCategory(k + 1, f"class{k + 1}") for k in range(4)], [gt_inst])
        t_eval, _ = best(lambda: evaluate(gt, {1: both}), 1)
        s = Settings(soft_nms=True, wbf=True)
        t_compose, _ = best(lambda: compose({"a": a, "b": b}, s), args.repeat)
        row = (str(n), f"{size}x{size}", *ref_cols[:1], f"{t_ours * 1000:.1f} ms",
               *ref_cols[1:], f"{t_mask * 1000:.1f} ms", f"{t_pkg * 1000:.0f} ms",
               f"{t_wbf * 1000:.0f} ms", f"{t_eval:.2f} s", f"{t_compose * 1000:.0f} ms")
        print(" | ".join(f"{c:>14}" for c in row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
