"""Entry point of ``cellseg-gui``.

    cellseg-gui [PATH | --sample] [--config C --weights W] [--pointrend-config C --pointrend-weights W]
                [--model cascade|pointrend|ensemble] [--device auto|cpu|cuda] [--tta]
                [--soft-nms] [--score-threshold T] [--screenshot out.png [--zoom Z]]

``--screenshot`` renders the window once the first prediction is shown (or an error), saves
it and exits: docs, and checking the app on a machine without a screen
(``QT_QPA_PLATFORM=offscreen`` or Xvfb).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

SCREENSHOT_TIMEOUT_S = 900


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cellseg-gui", description="Review and correct instance "
                                "segmentations of microscopy images.")
    p.add_argument("path", nargs="?", help="project (.cellseg), folder of images, image file, "
                   "COCO .json, or research folder (<sample>/image.tif + classN.tif)")
    p.add_argument("--sample", action="store_true", help="open the bundled sample nuclei image "
                   "with its demo models, Cascade and PointRend, shown as their WBF ensemble (File > "
                   "Open sample)")
    p.add_argument("--config", help="Cascade Mask R-CNN Detectron2 config.yaml")
    p.add_argument("--weights", help="Cascade Mask R-CNN checkpoint (.pth/.pkl)")
    p.add_argument("--pointrend-config", help="PointRend Detectron2 config.yaml")
    p.add_argument("--pointrend-weights", help="PointRend checkpoint (.pth/.pkl)")
    p.add_argument("--model", choices=["cascade", "pointrend", "ensemble"],
                   help="which model's predictions to show (ensemble: WBF of both)")
    p.add_argument("--device", help="auto, cpu or cuda[:N]")
    p.add_argument("--tta", action="store_true", help="test-time augmentation")
    p.add_argument("--soft-nms", action="store_true", help="Soft-NMS post-processing")
    p.add_argument("--score-threshold", type=float, help="hide instances scoring below this")
    p.add_argument("--screenshot", metavar="PNG",
                   help="save the window after the first prediction, then exit")
    p.add_argument("--zoom", type=float, help="canvas zoom for --screenshot (1 = 100%%)")
    p.add_argument("--center", metavar="X,Y", help="image pixel to centre a zoomed screenshot on")
    p.add_argument("--size", default="1500x950", help="window size WxH for --screenshot")
    p.add_argument("--settings", metavar="INI",
                   help="keep settings in this INI file instead of the user's settings")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    for a, b in (("config", "weights"), ("pointrend_config", "pointrend_weights")):
        if bool(getattr(args, a)) != bool(getattr(args, b)):
            print(f"cellseg-gui: --{a.replace('_', '-')} and --{b.replace('_', '-')} go together",
                  file=sys.stderr)
            return 2
    if args.sample and args.path:
        print("cellseg-gui: give PATH or --sample, not both", file=sys.stderr)
        return 2

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "cellseg-gui"])
    app.setApplicationName("cellseg-gui")
    app.setOrganizationName("cellseg")

    from .settings import AppSettings
    from .window import MainWindow

    settings = AppSettings.from_file(args.settings) if args.settings else AppSettings()
    # tools, review dock, undo history, Project and Train menus, import/export, File > Open
    # sample, first-run guidance and drag-and-drop: all built by the window (app.assembly)
    window = MainWindow(settings)
    window = configure(window, args)
    if args.screenshot:
        w, h = (int(v) for v in args.size.lower().split("x"))
        window.resize(w, h)
        window.show()
        return take_screenshot(app, window, Path(args.screenshot), args.zoom, args.center)
    window.show()
    rc = app.exec()
    if argv is None:  # the cellseg-gui command itself, not a caller that goes on running
        leave(app, window, rc)
    return rc


def leave(app, window, rc: int) -> int:
    """End the process at once once the window has closed, without the interpreter's teardown.

    What must outlive the process is done by then: the window's close wrote the settings and
    stopped the worker threads, and every edit is a committed SQLite transaction. What is left
    is CPython freeing every module and object one by one, torch's included (imported for the
    device list and the models): 1.5-3.5 s of a quit measured with ``benchmarks/startup.py``,
    for memory the OS takes back at once. Returns ``rc`` without exiting while a training
    still runs after its dialog was asked to stop it (Qt's teardown then stops the process).
    """
    import logging
    import os

    from PySide6.QtCore import QProcess

    for widget in app.topLevelWidgets():  # e.g. Fine-tune: stops a running training first
        if widget.isVisible():
            widget.close()
    if any(p.state() != QProcess.ProcessState.NotRunning for p in window.findChildren(QProcess)):
        return rc
    store = window.editing.store
    if store is not None:
        store.close()  # releases the project lock and merges the journal now
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing left to say
            pass
    os._exit(rc)


def configure(window, args):
    if args.device:
        window.models_panel.set_device(args.device)
        window.set_device(args.device)
    if args.sample:  # first, so that --config/--weights given with it replace a demo model
        from .sample import open_sample

        open_sample(window)
    if args.config:
        window.set_model("cascade", str(Path(args.config).resolve()),
                         str(Path(args.weights).resolve()))
    if args.pointrend_config:
        window.set_model("pointrend", str(Path(args.pointrend_config).resolve()),
                         str(Path(args.pointrend_weights).resolve()))
    post = window.post_panel
    if args.model:
        post.set_model_choice(args.model)
    elif args.pointrend_config and not args.config:
        post.set_model_choice("pointrend")
    post.tta.setChecked(args.tta)
    post.soft_nms.setChecked(args.soft_nms)
    if args.score_threshold is not None:
        post.set_score_threshold(args.score_threshold)
    if args.path and Path(args.path).suffix.lower() == ".cellseg":
        window.editing.open_project(args.path)  # its images, annotations and models
    elif args.path:
        window.open_path(args.path)
    return window


def take_screenshot(app, window, out: Path, zoom: float | None, center: str | None = None) -> int:
    """Wait for the first result (or error), render the window, save it and return."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    state = {"rc": 0}

    def ready(instances=None):
        if window.image is None and not window.last_error:
            return  # a result for nothing on screen yet
        QTimer.singleShot(200, loop.quit)  # let the last paint events through

    def failed(message):
        state["rc"] = 1
        QTimer.singleShot(200, loop.quit)

    window.instances_changed.connect(lambda inst: inst is not None and ready())
    window.error_shown.connect(failed)
    needs_models = window.source is not None and all(
        window.service.has_model(m) for m in window.post_panel.models())
    if window.source is None:
        QTimer.singleShot(500, loop.quit)
    elif not needs_models:  # nothing to predict with: a shot of the image is all there is
        window.image_shown.connect(lambda _: QTimer.singleShot(300, loop.quit))
    QTimer.singleShot(SCREENSHOT_TIMEOUT_S * 1000, loop.quit)
    if not window.last_error:
        loop.exec()
    if zoom:
        window.canvas.fit_to_window()
        window.canvas.zoom_by(zoom / window.canvas.zoom)
        if center:
            x, y = (float(v) for v in center.split(","))
            window.canvas.center_on_pixel(x, y)
        elif window.image is not None:
            h, w = window.image.shape[:2]
            window.canvas.center_on_pixel(w / 2, h / 2)
    app.processEvents()
    out.parent.mkdir(parents=True, exist_ok=True)
    ok = window.grab().save(str(out))
    window.close()
    if not ok:
        print(f"cellseg-gui: cannot write screenshot {out}", file=sys.stderr)
        return 1
    print(f"screenshot saved: {out}")
    if window.last_error:
        print(f"cellseg-gui: {window.last_error}", file=sys.stderr)
    return state["rc"] if not window.last_error else 1


if __name__ == "__main__":
    sys.exit(main())
