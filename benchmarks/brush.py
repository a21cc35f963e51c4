"""Brush / eraser stroke latency on a 2048x2048 image with 1,000 instances.

Runs the real review window (offscreen) with the editing controller and a project database,
selects an instance and paints a 200-step stroke through the brush tool, then an eraser stroke.
Each mouse move is timed in three parts: the editing-model update (``Stroke.move_to``), the
overlay re-render of the touched rectangle, and a synchronous repaint of the canvas viewport.
Releasing the mouse commits the stroke (undo stack + one database transaction + full overlay
refresh). Target: every mouse-move repaint under 16 ms.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/brush.py [--size 2048] [--instances 1000]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def scene(size: int, n: int, seed: int = 0):
    """A uint16 image and n round cells (radius 10..22) as Instances, 4 classes."""
    from cellseg.core.structures import CroppedMasks, Instances

    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.int32)
    yy, xx = np.mgrid[-22:23, -22:23]
    centres = rng.integers(30, size - 30, (n, 2))
    radii = rng.uniform(10, 22, n)
    for k, ((cx, cy), r) in enumerate(zip(centres, radii), start=1):  # scene set-up only
        disk = (xx ** 2 + yy ** 2) <= r * r
        win = labels[cy - 22:cy + 23, cx - 22:cx + 23]
        win[disk] = k
    masks, ids = CroppedMasks.from_label_image(labels)
    m = len(ids)
    image = (rng.random((size, size)) * 2000 + (labels > 0) * 8000).astype(np.uint16)
    return image, Instances((size, size), masks.tight_boxes(), rng.uniform(0.05, 1, m),
                            rng.integers(0, 4, m), masks)


def stats(ms: list[float]) -> tuple[float, float, float]:
    a = np.array(ms)
    return float(np.median(a)), float(np.percentile(a, 95)), float(a.max())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--instances", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args(argv)

    from PySide6.QtWidgets import QApplication

    from cellseg.app.settings import AppSettings
    from cellseg.app.window import MainWindow
    from cellseg.core.project.exchange import create_project
    from cellseg.core.project.records import Category
    from cellseg.core.project.store import ProjectStore
    from cellseg.core.project.strokes import Stroke

    app = QApplication.instance() or QApplication([])
    tmp = Path(tempfile.mkdtemp(prefix="cellseg-brush-"))
    image, instances = scene(args.size, args.instances)
    import tifffile

    (tmp / "images").mkdir()
    tifffile.imwrite(tmp / "images" / "cells.tif", image)
    create_project(tmp / "images", tmp / "p.cellseg")
    with ProjectStore.open(tmp / "p.cellseg") as store:
        store.set_categories([Category(k, k + 1, f"class{k + 1}") for k in range(4)])
        store.add_instances(store.image_by_name("cells.tif").id, instances)

    window = MainWindow(AppSettings.from_file(tmp / "settings.ini"))
    window.resize(1400, 900)
    window.show()
    c = window.editing
    c.open_project(tmp / "p.cellseg")
    deadline = time.monotonic() + 120
    while not (c.ann is not None and c.stored) and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)
    if c.ann is None:
        print("project did not open", file=sys.stderr)
        return 1
    window.canvas.zoom_1to1()
    viewport = window.canvas.viewport()
    rows = []
    for erase in (False, True):
        uid = int(c.ann.uids[len(c.ann) // 2])
        s = c.ann.state(uid)
        x0, y0 = (s.window[0] + s.window[2]) / 2, (s.window[1] + s.window[3]) / 2
        c.selected = {uid}
        window.canvas.center_on_pixel(x0, y0)
        app.processEvents()
        stroke = Stroke(c.ann, uid, radius=8, erase=erase)
        model_ms, overlay_ms, paint_ms, total_ms = [], [], [], []
        for k in range(args.steps):
            t = k / args.steps
            x = x0 + 60 * np.cos(6.28 * t) * t
            y = y0 + 60 * np.sin(6.28 * t) * t
            t0 = time.perf_counter()
            rect = stroke.move_to(x, y)
            t1 = time.perf_counter()
            c.render_rect(rect)
            t2 = time.perf_counter()
            viewport.repaint()
            t3 = time.perf_counter()
            model_ms.append((t1 - t0) * 1e3)
            overlay_ms.append((t2 - t1) * 1e3)
            paint_ms.append((t3 - t2) * 1e3)
            total_ms.append((t3 - t0) * 1e3)
        t0 = time.perf_counter()
        c.push(stroke.finish(), already_applied=True)
        viewport.repaint()
        commit_ms = (time.perf_counter() - t0) * 1e3
        name = "eraser" if erase else "brush"
        rows += [(name, "editing model", *stats(model_ms)),
                 (name, "overlay rect", *stats(overlay_ms)),
                 (name, "viewport repaint", *stats(paint_ms)),
                 (name, "mouse move total", *stats(total_ms)),
                 (name, "release: save + refresh", commit_ms, commit_ms, commit_ms)]
    print(f"brush latency: {args.size}x{args.size} image, {len(c.ann)} instances, "
          f"{args.steps} mouse moves per stroke, radius 8 px (Qt {os.environ['QT_QPA_PLATFORM']})")
    print(f"{'stroke':8} {'part':26} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
    for name, part, med, p95, mx in rows:
        print(f"{name:8} {part:26} {med:10.2f} {p95:8.2f} {mx:8.2f}")
    worst = max(r[3] for r in rows if r[1] == "mouse move total")
    print(f"target: each mouse move under 16 ms -> p95 {worst:.2f} ms: "
          f"{'OK' if worst < 16 else 'OVER'}")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
