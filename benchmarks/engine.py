"""Engine latency and peak memory per fixture model, plain and TTA, CPU (and GPU when present).

    python benchmarks/engine.py [--repeat N] [--no-tta] [--no-full-size] [--devices cpu cuda]

Each case runs in a fresh subprocess (so peak memory is that case's alone): one warm-up call,
then the median of N timed calls of ``predictor(image, tta=...)`` on the fixtures' 512x512
nuclei image (resized to 800 by the configs, as upstream). The full-size X-152 cascade (random
weights: no research checkpoint ships here) runs on a 1024x1024 image at its native size
(MIN_SIZE_TEST 0), the research data's scale. Upstream Detectron2's CPU seconds come from the
fixtures' expected_outputs.json (2-core machine).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("CELLSEG_SHARED", REPO.parent / "shared")) / "fixtures" / "detectron2"
FULL_SIZE = "cascade_mask_rcnn_X_152_32x8d_FPN_IN5k_gn_dconv"


def run_case(model: str, mode: str, device: str, repeat: int) -> dict:
    import numpy as np
    import torch

    from cellseg.core.config import load_config
    from cellseg.core.engine import Predictor, load_predictor, resolve_device
    from cellseg.core.engine.meta_arch import build_model
    from cellseg.core.io import read_image

    image = read_image(FIXTURES / "nuclei.png")
    if model == FULL_SIZE:
        cfg = load_config(FIXTURES / f"{model}.config.yaml",
                          ["INPUT.MIN_SIZE_TEST", "0", "MODEL.ROI_HEADS.NUM_CLASSES", "4"])
        torch.manual_seed(0)
        predictor = Predictor(cfg, build_model(cfg), resolve_device(device))
        image = np.tile(image, (2, 2, 1))  # 1024 x 1024
    else:
        folder = FIXTURES / model
        predictor = load_predictor(folder / "config.yaml", folder / "model_final.pth", device)
    tta = mode == "tta"
    predictor(image, tta=tta)  # warm-up: allocator, oneDNN/cuDNN kernel selection
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = predictor(image, tta=tta)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    result = {"seconds": statistics.median(times), "instances": len(out),
              "peak_rss_mb": _peak_rss_mb()}
    if device == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def upstream_seconds(model: str, mode: str):
    path = FIXTURES / model / "expected_outputs.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())[f"nuclei.png|{mode}"]["seconds"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-tta", action="store_true")
    parser.add_argument("--no-full-size", action="store_true")
    parser.add_argument("--devices", nargs="+", default=None)
    parser.add_argument("--case", nargs=3, help=argparse.SUPPRESS)  # internal: run one case
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(*args.case[:3], repeat=args.repeat)))
        return 0
    import torch

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    cases = [(m, mode) for m in ("mask_rcnn", "cascade_gn_dconv", "pointrend")
             for mode in (("plain",) if args.no_tta else ("plain", "tta"))]
    if not args.no_full_size:
        cases.append((FULL_SIZE, "plain"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    header = ("model", "mode", "device", "seconds", "upstream CPU s", "speed-up", "instances",
              "peak RSS MB", "peak GPU MB")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for device in devices:
        for model, mode in cases:
            proc = subprocess.run([sys.executable, __file__, "--repeat", str(args.repeat),
                                   "--case", model, mode, device],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"| {model} | {mode} | {device} | failed: "
                      f"{proc.stderr.strip().splitlines()[-1]} |")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            up = upstream_seconds(model, mode) if device == "cpu" else None
            speed = f"{up / r['seconds']:.2f}x" if up else ""
            name = "X-152 cascade (full size, 1024px)" if model == FULL_SIZE else model
            print(f"| {name} | {mode} | {device} | {r['seconds']:.2f} | "
                  f"{'' if up is None else f'{up:.2f}'} | {speed} | {r['instances']} | "
                  f"{r['peak_rss_mb']:.0f} | {r.get('peak_gpu_mb', 0):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
