"""Deformable convolution on the CPU: this project's op vs torchvision's vs a plain grouped conv.

    python benchmarks/deform_conv.py [--repeat N] [--threads T] [--shapes res3 res4 res5]
                                     [--channels-last] [--modulated]

The X-152 cascade's deformable 3x3 convolutions at a 1024x1024 input (32 groups, one deformable
group, stride 1, padding 1): res3 1x512x128x128, res4 1x1024x64x64, res5 1x2048x32x32. Each
row times forward, and backward alone (gradients wrt input, offset and weight, as in training),
of the three ops side by side in one process: the median of N calls after one warm-up call.
Offsets are random, up to a few pixels (many samples fall off the grid and some off the image).
``ratio tv/ours`` is the speed-up over torchvision; ``ours/conv`` how far from an ordinary
grouped convolution of the same shape we still are. ``max |diff|`` is the largest difference
between our output and torchvision's.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch.nn import functional as F
from torchvision.ops import deform_conv2d as tv_deform_conv2d

from cellseg.core.engine.deform_conv import deform_conv2d

SHAPES = {"res3": (512, 128), "res4": (1024, 64), "res5": (2048, 32)}  # channels, size
GROUPS = 32


def _median_seconds(fn, repeat: int) -> float:
    fn()  # warm-up: allocator, oneDNN kernel selection
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _backward_seconds(forward, inputs, repeat: int) -> float:
    """Median time of backward alone (each repeat runs its own forward untimed)."""
    def once():
        out = forward()
        grad = torch.ones_like(out)
        t0 = time.perf_counter()
        torch.autograd.grad(out, inputs, grad)
        return time.perf_counter() - t0
    once()
    return statistics.median(once() for _ in range(repeat))


def bench(name: str, repeat: int, channels_last: bool, modulated: bool) -> list[dict]:
    c, size = SHAPES[name]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, c, size, size, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c, c // GROUPS, 3, 3, generator=g) * (2.0 / (9 * c / GROUPS)) ** 0.5
    offset = torch.randn(1, 18, size, size, generator=g) * 2
    mask = torch.rand(1, 9, size, size, generator=g) if modulated else None
    ops = {
        "torchvision": lambda a, o, w, m: tv_deform_conv2d(a, o, w, padding=1, mask=m),
        "ours": lambda a, o, w, m: deform_conv2d(a, o, w, padding=1, mask=m),
        "conv2d": lambda a, o, w, m: F.conv2d(a, w, padding=1, groups=GROUPS),
    }
    diff = (ops["ours"](x, offset, weight, mask) - ops["torchvision"](x, offset, weight, mask))
    rows = []
    for kind in ("forward", "backward"):
        seconds = {}
        for op_name, op in ops.items():
            if kind == "forward":
                with torch.no_grad():
                    seconds[op_name] = _median_seconds(lambda: op(x, offset, weight, mask), repeat)
            else:
                xs, os_, ws = (t.detach().clone().requires_grad_() for t in (x, offset, weight))
                inputs = [xs, ws] if op_name == "conv2d" else [xs, os_, ws]
                seconds[op_name] = _backward_seconds(lambda: op(xs, os_, ws, mask), inputs,
                                                     repeat)
        rows.append({"shape": f"{name} 1x{c}x{size}x{size}", "pass": kind, **seconds,
                     "max_diff": diff.abs().max().item()})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--channels-last", action="store_true", help="NHWC input (as Predictor)")
    parser.add_argument("--modulated", action="store_true", help="DCN v2 (with mask)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{'channels-last' if args.channels_last else 'contiguous'} input, "
          f"DCN {'v2' if args.modulated else 'v1'}, median of {args.repeat}")
    header = ("shape", "pass", "torchvision s", "ours s", "conv2d s", "tv/ours", "ours/conv",
              "max |diff|")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in args.shapes:
        for r in bench(name, args.repeat, args.channels_last, args.modulated):
            print(f"| {r['shape']} | {r['pass']} | {r['torchvision']:.3f} | {r['ours']:.3f} | "
                  f"{r['conv2d']:.3f} | {r['torchvision'] / r['ours']:.1f}x | "
                  f"{r['ours'] / r['conv2d']:.1f}x | {r['max_diff']:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
