"""Upstream Detectron2's side of ``benchmarks/engine.py`` -- run ONLY under D2_VENV's python.

This file imports detectron2 and its PointRend project; nothing in cellseg imports it, and
it imports nothing of cellseg (the oracle stays outside the project). Two commands:

    python upstream_runner.py init CONFIG OUT.pth [--seed S] [--opts KEY VALUE ...]
        build upstream's model from CONFIG with torch.manual_seed(S) (random weights) and save
        ``{"model": state_dict}`` to OUT.pth, so that both engines run the same weights.

    python upstream_runner.py serve CONFIG WEIGHTS IMAGE {plain,tta} [--tile N] [--threads T]
        load the model (DefaultPredictor, or GeneralizedRCNNWithTTA around its model), run one
        warm-up call, print ``{"ready": ...}``; then for each ``run`` line on stdin run one timed
        call and print ``{"seconds", "instances", "peak_rss_mb"}`` as a JSON line.

The image is read with ``cv2.imread`` (uint8 BGR, what DefaultPredictor expects) and tiled
N x N (N=2: the 512 px nuclei image becomes 1024 x 1024).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.engine import DefaultPredictor
from detectron2.modeling import GeneralizedRCNNWithTTA, build_model
from point_rend import add_pointrend_config


def load_cfg(config: str, opts: list[str]):
    cfg = get_cfg()
    add_pointrend_config(cfg)
    # the cascade fixture's dump carries ROI_HEADS.CASCADE_* keys newer than this get_cfg()
    cfg.set_new_allowed(True)
    cfg.merge_from_file(config)
    cfg.merge_from_list(list(opts) + ["MODEL.DEVICE", "cpu"])
    cfg.freeze()
    return cfg


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def init(args) -> None:
    cfg = load_cfg(args.config, args.opts)
    torch.manual_seed(args.seed)
    model = build_model(cfg)
    torch.save({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, args.out)


def make_call(cfg, image: np.ndarray, mode: str):
    predictor = DefaultPredictor(cfg)  # loads cfg.MODEL.WEIGHTS
    if mode == "plain":
        return lambda: predictor(image)["instances"]
    tta = GeneralizedRCNNWithTTA(cfg, predictor.model)
    h, w = image.shape[:2]
    tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))

    def call():
        with torch.no_grad():
            return tta([{"image": tensor, "height": h, "width": w}])[0]["instances"]
    return call


def serve(args) -> None:
    torch.set_num_threads(args.threads)
    cfg = load_cfg(args.config, list(args.opts) + ["MODEL.WEIGHTS", args.weights])
    image = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"cannot read {args.image}")
    image = np.ascontiguousarray(np.tile(image, (args.tile, args.tile, 1)))
    call = make_call(cfg, image, args.mode)
    call()  # warm-up
    print(json.dumps({"ready": True, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        t0 = time.perf_counter()
        out = call()
        seconds = time.perf_counter() - t0
        print(json.dumps({"seconds": seconds, "instances": len(out),
                          "peak_rss_mb": peak_rss_mb()}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init")
    p.add_argument("config")
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--opts", nargs="*", default=[])
    p = sub.add_parser("serve")
    p.add_argument("config")
    p.add_argument("weights")
    p.add_argument("image")
    p.add_argument("mode", choices=("plain", "tta"))
    p.add_argument("--tile", type=int, default=1)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--opts", nargs="*", default=[])
    args = parser.parse_args()
    init(args) if args.command == "init" else serve(args)


if __name__ == "__main__":
    main()
