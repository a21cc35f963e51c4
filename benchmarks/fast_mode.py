"""Exact vs fast precision, side by side: speed, how far outputs move, and AP on real labels.

    python benchmarks/fast_mode.py [--device cpu|cuda] [--repeat N] [--tta] [--full-size]
                                   [--models mask_rcnn cascade_gn_dconv pointrend demo]

Per model (the three Detectron2 fixtures and the demo PointRend in resources/sample/), the exact
and the fast predictor of the same checkpoint run on the nuclei image, alternately (so machine
load hits both alike): one warm-up call each, then the median of N timed calls each. Printed:

* seconds exact / fast and the speed-up (exact / fast), peak GPU memory on CUDA;
* how far fast moves the outputs: COCO box and mask AP of the fast predictions scored against
  the exact predictions as ground truth (all exact detections, and those scoring >= 0.5);
* mask AP of each mode on the image's real labels (/shared/data/nuclei/mask2d.tif, one class:
  the models' classes are ignored).

``--full-size`` adds the X-152 cascade of the research report with random weights at 1024x1024
(native size): speed and memory only, AP of random weights means nothing.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CELLSEG_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "detectron2"
NUCLEI = SHARED / "data" / "nuclei"
FULL_SIZE = "cascade_mask_rcnn_X_152_32x8d_FPN_IN5k_gn_dconv"
MODELS = ("mask_rcnn", "cascade_gn_dconv", "pointrend", "demo")


def load(model: str, precision: str, device: str):
    from cellseg.core.engine import Predictor, load_predictor, resolve_device

    if model == FULL_SIZE:
        from cellseg.core.config import load_config
        from cellseg.core.engine.meta_arch import build_model

        cfg = load_config(FIXTURES / f"{model}.config.yaml",
                          ["INPUT.MIN_SIZE_TEST", "0", "MODEL.ROI_HEADS.NUM_CLASSES", "4"])
        torch.manual_seed(0)  # the same random weights for both precisions
        return Predictor(cfg, build_model(cfg), resolve_device(device), precision=precision)
    if model == "demo":
        folder = REPO / "resources" / "sample" / "model_pointrend"
    else:
        folder = FIXTURES / model
    return load_predictor(folder / "config.yaml", folder / "model_final.pth", device,
                          precision=precision)


def agreement_ap(reference, predicted, min_score: float = 0.0) -> dict[str, float]:
    """COCO bbox/segm AP of ``predicted`` with ``reference`` (score >= min_score) as ground
    truth: 100 when fast reproduces exact."""
    from cellseg.core.coco.dataset import CocoImage
    from cellseg.core.coco.writer import coco_dict
    from cellseg.core.evaluation import evaluate

    ref = reference[reference.scores >= min_score]
    classes = max(int(reference.classes.max(initial=0)), int(predicted.classes.max(initial=0)))
    gt = coco_dict([CocoImage(1, "image", *reference.image_size)],
                   [f"class {c + 1}" for c in range(classes + 1)], [ref])
    ev = evaluate(gt, {1: predicted})
    return {t: ev.metrics[t]["AP"] for t in ev.metrics}


def label_ap(predicted) -> float:
    """Class-agnostic mask AP against the nuclei image's real labels."""
    import tifffile

    from cellseg.core.coco.dataset import CocoImage
    from cellseg.core.coco.writer import coco_dict
    from cellseg.core.evaluation import evaluate
    from cellseg.core.structures import CroppedMasks, Instances

    labels = tifffile.imread(NUCLEI / "mask2d.tif")
    masks, ids = CroppedMasks.from_label_image(labels)
    truth = Instances(labels.shape, masks.tight_boxes().astype(np.float32),
                      np.ones(len(ids), np.float32), np.zeros(len(ids), np.int64), masks)
    gt = coco_dict([CocoImage(1, "img2d.tif", *labels.shape)], ["nucleus"], [truth])
    one_class = predicted.replace(classes=np.zeros_like(predicted.classes))
    return evaluate(gt, {1: one_class}, iou_types=("segm",)).metrics["segm"]["AP"]


def timed(predictor, image, tta: bool, device: str) -> tuple[float, object]:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = predictor(image, tta=tta)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def peak_gpu_mb(predictor, image, tta: bool, device: str) -> float | None:
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    predictor(image, tta=tta)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def run_case(model: str, tta: bool, device: str, repeat: int) -> dict:
    from cellseg.core.io import read_image

    image = read_image(FIXTURES / "nuclei.png")
    if model == FULL_SIZE:
        image = np.tile(image, (2, 2, 1))  # 1024 x 1024, the research data's scale
    exact, fast = load(model, "exact", device), load(model, "fast", device)
    outs, times = {}, {"exact": [], "fast": []}
    for name, p in (("exact", exact), ("fast", fast)):
        outs[name] = p(image, tta=tta)  # warm-up: allocator, oneDNN/cuDNN kernel choice
    for _ in range(repeat):
        for name, p in (("exact", exact), ("fast", fast)):
            seconds, outs[name] = timed(p, image, tta, device)
            times[name].append(seconds)
    row = {"model": "X-152 cascade 1024px (random)" if model == FULL_SIZE else model,
           "mode": "tta" if tta else "plain", "note": fast.precision.note,
           "exact_s": statistics.median(times["exact"]),
           "fast_s": statistics.median(times["fast"]),
           "n_exact": len(outs["exact"]), "n_fast": len(outs["fast"]),
           "gpu_exact": peak_gpu_mb(exact, image, tta, device),
           "gpu_fast": peak_gpu_mb(fast, image, tta, device)}
    if model != FULL_SIZE:
        row["agree_all"] = agreement_ap(outs["exact"], outs["fast"])
        row["agree_05"] = agreement_ap(outs["exact"], outs["fast"], 0.5)
        row["labels_exact"] = label_ap(outs["exact"])
        row["labels_fast"] = label_ap(outs["fast"])
    return row


def _f(v, fmt="{:.1f}") -> str:
    return "" if v is None else fmt.format(v)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tta", action="store_true", help="also the TTA mode of every model")
    parser.add_argument("--full-size", action="store_true",
                        help="also the full-size X-152 cascade at 1024x1024 (random weights)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU: torch.cuda.is_available() is False")
        return 0
    from cellseg.core.engine.precision import resolve_precision

    where = (torch.cuda.get_device_name(0) if args.device == "cuda"
             else f"{torch.get_num_threads()} CPU threads")
    print(f"torch {torch.__version__}, {where}; "
          f"{resolve_precision('fast', torch.device(args.device)).note}")
    cases = [(m, tta) for m in args.models for tta in ((False, True) if args.tta else (False,))]
    if args.full_size:
        cases.append((FULL_SIZE, False))
    header = ("model", "mode", "exact s", "fast s", "speed-up", "instances exact/fast",
              "peak GPU MB exact/fast", "AP fast vs exact: box/mask (all)",
              "box/mask (exact >= 0.5)", "mask AP on labels: exact/fast")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header), flush=True)
    for model, tta in cases:
        try:
            r = run_case(model, tta, args.device, args.repeat)
        except Exception as exc:  # one failing case must not hide the others
            print(f"| {model} | {'tta' if tta else 'plain'} | failed: "
                  f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} |",
                  flush=True)
            continue
        gpu = (f"{_f(r['gpu_exact'], '{:.0f}')} / {_f(r['gpu_fast'], '{:.0f}')}"
               if r["gpu_exact"] is not None else "")
        agree = lambda k: (f"{r[k]['bbox']:.1f} / {r[k]['segm']:.1f}" if k in r else "")
        labels = (f"{r['labels_exact']:.1f} / {r['labels_fast']:.1f}"
                  if "labels_exact" in r else "")
        print(f"| {r['model']} | {r['mode']} | {r['exact_s']:.3f} | {r['fast_s']:.3f} | "
              f"{r['exact_s'] / r['fast_s']:.2f}x | {r['n_exact']} / {r['n_fast']} | {gpu} | "
              f"{agree('agree_all')} | {agree('agree_05')} | {labels} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
