"""Box prompts: time from a box to its mask, with the image's features cached (issue 15).

    python benchmarks/box_prompt.py [--boxes 50] [--full-size] [--device cpu|cuda]

For each fixture model (and, with --full-size, the research report's X-152 cascade with random
weights on a 1024x1024 image at native size), the backbone encodes the nuclei image once
(``encode``, reported once) and then each of N boxes around ground-truth nuclei gets its mask
alone (``masks_for_boxes`` with one box, the box head choosing the class: what the app's box
tool does on release). Reports the median and 95th percentile per box, and the time of a full
prediction of the same image for scale. One command, a printed table; run both columns in one
session (the machine's load changes the absolute numbers, not which is larger).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CELLSEG_SHARED") or next(
    (p / "shared" for p in REPO.parents if (p / "shared" / "fixtures").is_dir()),
    REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "detectron2"
NUCLEI = SHARED / "data" / "nuclei"
MODELS = ("mask_rcnn", "cascade_gn_dconv", "pointrend")
FULL_SIZE = "cascade_mask_rcnn_X_152_32x8d_FPN_IN5k_gn_dconv"


def predictor_for(name: str, device: str):
    from cellseg.core.engine import Predictor, load_predictor, resolve_device

    if name == FULL_SIZE:
        from cellseg.core.config import load_config
        from cellseg.core.engine.meta_arch import build_model

        cfg = load_config(FIXTURES / f"{name}.config.yaml",
                          ["INPUT.MIN_SIZE_TEST", "0", "MODEL.DEVICE", device])
        torch.manual_seed(0)
        return Predictor(cfg, build_model(cfg), resolve_device(device))
    folder = FIXTURES / name
    return load_predictor(folder / "config.yaml", folder / "model_final.pth", device=device)


def prompt_boxes(labels: np.ndarray, n: int) -> np.ndarray:
    """(n, 4) XYXY boxes: the ground-truth nuclei's tight boxes grown by 2 px."""
    from cellseg.core.structures import CroppedMasks

    masks, _ = CroppedMasks.from_label_image(labels)
    boxes = masks.tight_boxes() + np.array([-2, -2, 2, 2], np.float32)
    rng = np.random.default_rng(0)
    return boxes[rng.choice(len(boxes), size=min(n, len(boxes)), replace=False)]


def run(name: str, image: np.ndarray, boxes: np.ndarray, device: str) -> dict:
    from cellseg.core.engine.given_boxes import encode, masks_for_boxes

    predictor = predictor_for(name, device)
    predictor(image)  # warm-up
    t = time.perf_counter()
    predictor(image)
    full = time.perf_counter() - t
    t = time.perf_counter()
    encoded = encode(predictor, image)
    enc = time.perf_counter() - t
    masks_for_boxes(predictor, encoded, boxes[:1])  # warm-up of the heads
    times = []
    for box in boxes:
        t = time.perf_counter()
        out = masks_for_boxes(predictor, encoded, box[None])
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        assert len(out) == 1
    times.sort()
    return {"full": full, "encode": enc, "median": statistics.median(times),
            "p95": times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))],
            "features MB": encoded.nbytes / 2 ** 20}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=50)
    parser.add_argument("--full-size", action="store_true")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU: torch.cuda.is_available() is False")
        return 0
    image = tifffile.imread(NUCLEI / "img2d.tif")
    labels = tifffile.imread(NUCLEI / "mask2d.tif")
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, {cpu}")
    header = ("model", "image", "full prediction s", "encode s", "per box median ms",
              "per box p95 ms", "features MB")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header), flush=True)
    cases = [(m, image, labels) for m in MODELS]
    if args.full_size:
        cases.append((FULL_SIZE, np.tile(image, (2, 2)), np.tile(labels, (2, 2))))
    for name, im, lab in cases:
        r = run(name, im, prompt_boxes(lab, args.boxes), args.device)
        shown = "X-152 cascade (random)" if name == FULL_SIZE else name
        print(f"| {shown} | {im.shape[1]}x{im.shape[0]} | {r['full']:.2f} | {r['encode']:.2f} | "
              f"{r['median'] * 1000:.0f} | {r['p95'] * 1000:.0f} | {r['features MB']:.0f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
