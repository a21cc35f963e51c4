"""The Box tool in the real window: time from box release to the mask on screen (issue 15).

    QT_QPA_PLATFORM=offscreen python benchmarks/box_tool.py [--boxes 50] [--models demo,fixtures]
                                                           [--full-size]

For each model (the demo Cascade, PointRend and their ensemble; the Detectron2 fixtures
mask_rcnn, cascade_gn_dconv and pointrend; with --full-size the research report's X-152 cascade
with random weights on a 1024x1024 tiling of the image, at native size) the nuclei image is
opened in the review window with the model in its slot, the Box tool is chosen (which encodes
the image's features in the model thread) and N boxes around ground-truth nuclei (tight box + 2
px) are dragged with the mouse. Each time runs from just before the mouse release to the end of
the canvas repaint that shows the new instance (release -> model thread -> edit -> overlay ->
paint); each box is undone before the next. Prints the median and 95th percentile per model.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from box_prompt import FIXTURES, FULL_SIZE, NUCLEI, prompt_boxes  # noqa: E402


def demo_models() -> dict[str, tuple[str, str]]:
    from cellseg.resources import sample

    return {m.slot: (str(m.config), str(m.weights)) for m in sample().models}


def cases(which: set[str], full_size: bool):
    """(name, {slot: (config, weights)}, model choice, image file)."""
    if "demo" in which:
        demo = demo_models()
        yield "demo cascade", {"cascade": demo["cascade"]}, "cascade", NUCLEI / "img2d.tif"
        yield "demo pointrend", {"pointrend": demo["pointrend"]}, "pointrend", NUCLEI / "img2d.tif"
        yield "demo ensemble", demo, "ensemble", NUCLEI / "img2d.tif"
    if "fixtures" in which:
        for name in ("mask_rcnn", "cascade_gn_dconv", "pointrend"):
            slot = "pointrend" if name == "pointrend" else "cascade"
            d = FIXTURES / name
            yield name, {slot: (str(d / "config.yaml"), str(d / "model_final.pth"))}, slot, \
                NUCLEI / "img2d.tif"
    if full_size:
        yield "X-152 cascade (random)", None, "cascade", None


def full_size_setup(window, tmp: Path):
    """The X-152 cascade, random weights, native size, put straight into the model thread's
    predictor cache (a checkpoint of random weights would be 1 GB of nothing)."""
    import torch
    from cellseg.core.config import load_config
    from cellseg.core.engine import Predictor, resolve_device
    from cellseg.core.engine.meta_arch import build_model

    config = tmp / "x152.yaml"
    config.write_text(f"_BASE_: {FIXTURES / (FULL_SIZE + '.config.yaml')}\nINPUT:\n"
                      "  MIN_SIZE_TEST: 0\nMODEL:\n  DEVICE: cpu\n")
    weights = tmp / "random.pth"  # never read: the predictor is already loaded
    cfg = load_config(config)
    torch.manual_seed(0)
    predictor = Predictor(cfg, build_model(cfg), resolve_device("cpu"))
    window.set_model("cascade", str(config), str(weights))
    key = window.service.key_for("", "cascade", False)
    window.service._predictors[(key.config, key.weights, key.device, key.precision)] = predictor
    image = tifffile.imread(NUCLEI / "img2d.tif")
    labels = tifffile.imread(NUCLEI / "mask2d.tif")
    path = tmp / "tiled.tif"
    tifffile.imwrite(path, np.tile(image, (2, 2)))
    return path, np.tile(labels, (2, 2))


def measure(app, window, c, boxes: np.ndarray) -> list[float]:
    from PySide6.QtCore import QPointF, Qt
    from PySide6.QtTest import QTest

    canvas = window.canvas
    vp = canvas.viewport()
    shown = []
    c.assist.mask_shown.connect(lambda label: shown.append(time.perf_counter()))
    times = []
    for x0, y0, x1, y1 in boxes:
        canvas.center_on_pixel((x0 + x1) / 2, (y0 + y1) / 2)
        p0 = canvas.mapFromScene(QPointF(x0, y0))
        p1 = canvas.mapFromScene(QPointF(x1, y1))
        QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, p0)
        QTest.mouseMove(vp, p1)
        n = len(shown)
        t = time.perf_counter()
        QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, p1)
        deadline = time.time() + 120
        while len(shown) == n:
            if time.time() > deadline:
                raise SystemExit(f"no mask after 120 s: {window.statusBar().currentMessage()}")
            app.processEvents()
            time.sleep(0.0005)
        vp.repaint()  # the paint that puts the new instance on screen
        times.append(time.perf_counter() - t)
        window.undo_stack.undo()
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=50)
    parser.add_argument("--models", default="demo,fixtures")
    parser.add_argument("--full-size", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import torch
    from PySide6.QtWidgets import QApplication
    from cellseg.app.settings import AppSettings
    from cellseg.app.window import MainWindow

    app = QApplication.instance() or QApplication([])
    print(f"torch {torch.__version__}, cpu, {torch.get_num_threads()} threads, "
          f"Qt {os.environ['QT_QPA_PLATFORM']}")
    print("| model | image | boxes | release to mask on screen, median ms | p95 ms |")
    print("|---|---|---|---|---|", flush=True)
    labels = tifffile.imread(NUCLEI / "mask2d.tif")
    for name, models, choice, image in cases(set(args.models.split(",")), args.full_size):
        with tempfile.TemporaryDirectory() as tmp:
            window = MainWindow(AppSettings.from_file(Path(tmp) / "settings.ini"))
            window.resize(1400, 900)
            window.show()
            c = window.editing
            lab = labels
            if models is None:
                image, lab = full_size_setup(window, Path(tmp))
            else:
                for slot, paths in models.items():
                    window.set_model(slot, *paths)
            window.post_panel.set_model_choice(choice)
            assert window.open_path(image)
            deadline = time.time() + 600
            if models is None:  # no full prediction of random weights: boxes need none
                while window.image is None and time.time() < deadline:
                    app.processEvents()
                window.cancel()
                while window.service.busy and time.time() < deadline:
                    app.processEvents()
                    time.sleep(0.01)
                from cellseg.core.structures import CroppedMasks, Instances

                h, w = window.image.shape[:2]
                empty = np.zeros((0, 4), np.float32)
                window.set_current_instances(Instances(
                    (h, w), empty, np.zeros(0, np.float32), np.zeros(0, np.int64),
                    CroppedMasks.from_dense(np.zeros((0, h, w), bool))), edited=False)
            while (c.ann is None or (models is not None and window.current_instances() is None)
                   ) and time.time() < deadline:
                app.processEvents()
                time.sleep(0.01)
            c.choose_tool("box")  # encodes the image in the model thread
            while window.service.busy and time.time() < deadline:
                app.processEvents()
                time.sleep(0.01)
            boxes = prompt_boxes(lab, args.boxes)
            measure(app, window, c, boxes[:2])  # warm-up of the heads
            times = sorted(measure(app, window, c, boxes))
            p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
            h, w = window.image.shape[:2]
            print(f"| {name} | {w}x{h} | {len(times)} | {statistics.median(times) * 1000:.0f} | "
                  f"{p95 * 1000:.0f} |", flush=True)
            window.forget_unsaved()
            window.close()
            app.processEvents()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
