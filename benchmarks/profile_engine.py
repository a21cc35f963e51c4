"""Where the engine's CPU time goes: torch.profiler's table for one case of benchmarks/engine.py.

    python benchmarks/profile_engine.py mask_rcnn [--tta] [--rows 25] [--weights W.pth]
    python benchmarks/profile_engine.py X-152            # full-size cascade, 1024 px, random

One warm-up call, then one profiled call; prints the ops sorted by self CPU time (the
kernels themselves, not their Python callers) with call counts and input shapes grouped.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from engine import FIXTURE_MODELS, FIXTURES, FULL_SIZE, FULL_SIZE_OPTS  # noqa: E402


def build(case: str, weights: str | None):
    from cellseg.core.config import load_config
    from cellseg.core.engine import Predictor, load_predictor, resolve_device
    from cellseg.core.engine.meta_arch import build_model
    from cellseg.core.io import read_image

    image = read_image(FIXTURES / "nuclei.png")
    if case in FIXTURE_MODELS:
        folder = FIXTURES / case
        return load_predictor(folder / "config.yaml", folder / "model_final.pth", "cpu"), image
    label = next(k for k in FULL_SIZE if case in k)
    config = FIXTURES / FULL_SIZE[label]
    if weights:
        predictor = load_predictor(config, weights, "cpu", list(FULL_SIZE_OPTS))
    else:
        cfg = load_config(config, list(FULL_SIZE_OPTS))
        torch.manual_seed(0)
        predictor = Predictor(cfg, build_model(cfg), resolve_device("cpu"))
    return predictor, np.ascontiguousarray(np.tile(image, (2, 2, 1)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", help="a fixture model name, or 'X-152' / 'X-101' (full size)")
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--weights", help="full-size checkpoint (default: random, seed 0)")
    parser.add_argument("--shapes", action="store_true", help="group by input shapes too")
    args = parser.parse_args()
    predictor, image = build(args.case, args.weights)
    predictor(image, tta=args.tta)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
        out = predictor(image, tta=args.tta)
    print(f"{args.case} {'tta' if args.tta else 'plain'}: {len(out)} instances")
    table = prof.key_averages(group_by_input_shape=args.shapes)
    print(table.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=40))
    return 0


if __name__ == "__main__":
    sys.exit(main())
