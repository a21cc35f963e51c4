"""A 16384x16384 16-bit image with ~32,000 cells in the real review window: open, pan, zoom,
toggle, hover, brush; peak memory; tiled CPU prediction time per megapixel.

    OMP_NUM_THREADS=1 QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/large_image.py \
        [--size 16384] [--canvas auto|legacy|tiled] [--predict-size 960] [--no-predict]

The image is generated here: the real 512 px nuclei image and its labels (``../shared/data/
nuclei``) upscaled 2x (labels nearest) to 1024 px and repeated (size/1024)^2 times: 16 x 16 =
256 copies x 125 nuclei = 32,000 instances at 16384 px. It is written as an uncompressed TIFF
and opened the way the app opens images (``read_image`` in the loader thread); the instances
(classes 0-3, random scores) are handed to the window as a result would be, with the editing
controller installed (no project).

Rows: wall-clock ms on whatever CPU runs it, and the GUI thread's CPU time (``thread_time``:
what a frame costs when the machine is not shared; on a busy machine wall-clock adds the wait
for a core). The offscreen platform paints with Qt's raster engine, as a desktop without GPU
compositing does; under Xvfb (``DISPLAY`` set) the real X11 platform is used. Viewport
~1000x800.

* open -> first paint: ``open_path`` until the image is read (loader thread) and handed to
  ``canvas.set_image`` (display contrast, image layer), plus the canvas showing the
  instances (``canvas.set_instances``, what the window's ``_show`` does first) and the first
  synchronous repaint at fit (target < 2 s); then, listed apart, handing them to the window
  (``set_current_instances``), where the editing controller builds its editing model of them;
* each of these is the action plus a synchronous ``viewport().repaint()``, median and p95 of
  ``--repeat`` (target < 16 ms): overlay toggles (opacity, class visibility, on/off) at fit and at
  100%, and opacity at 51% (the costliest scale: level 0 still, ~4 image pixels a screen
  pixel); zoom steps around fit; panning 40 px steps at 100%; hover (a mouse move over cells: hit
  test, hover outline, status bar); brush mouse moves at 100% (editing model + overlay rectangle
  + repaint, as ``benchmarks/brush.py``);
* resident memory before and after opening, and its peak per phase (Linux ``VmHWM``, reset
  between phases);
* tiled prediction (``cellseg.core.tiling.predict_tiled``, 512 px tiles, 64 px overlap) of a
  ``--predict-size`` crop of the mosaic with each Detectron2 fixture model on the CPU, seconds
  per megapixel.

``--canvas legacy`` forces the one-image overlay (every size), ``tiled`` the tiled multiscale
canvas (every size); ``auto`` is what the app does. The legacy canvas needs ~40 bytes per pixel
while showing a result (10 GB at 16k): the benchmark refuses to run it where /proc/meminfo's
MemAvailable is short of that.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if "DISPLAY" not in os.environ:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CELLSEG_SHARED", REPO.parent / "shared"))
LEGACY_BYTES_PER_PIXEL = 40  # measured peak of the one-image overlay path, with margin


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def rss(field: str = "VmRSS") -> int:
    """This process's resident memory now (VmRSS) or at its peak (VmHWM), bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak() -> None:
    """Start VmHWM afresh (Linux: "5" to clear_refs), so a peak belongs to one phase."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def mosaic(size: int, seed: int = 0):
    """(uint16 image, Instances): the nuclei image 2x upscaled, repeated to ``size`` px."""
    import cv2
    import tifffile

    from cellseg.core.structures import CroppedMasks, Instances

    image = tifffile.imread(SHARED / "data" / "nuclei" / "img2d.tif")
    labels = tifffile.imread(SHARED / "data" / "nuclei" / "mask2d.tif").astype(np.int32)
    image = cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    labels = cv2.resize(labels, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    tile = image.shape[0]
    k = size // tile
    if k * tile != size:
        raise SystemExit(f"--size must be a multiple of {tile}")
    one, _ = CroppedMasks.from_label_image(labels)
    # copies of one tile's masks: windows shifted, the flat bitmaps repeated (no per-copy loop)
    oy, ox = np.divmod(np.arange(k * k), k)
    shift = np.stack([ox, oy, ox, oy], 1)[:, None, :] * tile
    windows = (one.windows[None] + shift).reshape(-1, 4)
    sizes = (windows[:, 2] - windows[:, 0]) * (windows[:, 3] - windows[:, 1])
    starts = np.zeros(len(windows) + 1, np.int64)
    np.cumsum(sizes, out=starts[1:])
    masks = CroppedMasks((size, size), windows, np.tile(one.data, k * k), starts)
    rng = np.random.default_rng(seed)
    n = len(windows)
    boxes = (one.tight_boxes()[None] + shift).reshape(-1, 4)
    inst = Instances((size, size), boxes, rng.uniform(0.05, 1, n),
                     rng.integers(0, 4, n), masks)
    return np.tile(image, (k, k)), inst


def stats(ms: list[float]) -> tuple[float, float]:
    a = np.asarray(ms)
    return float(np.median(a)), float(np.percentile(a, 95))


class Clock:
    """Wall-clock and this thread's CPU time of a block (the GUI thread does all the work
    measured here, so CPU time is what the frame costs when the machine is not shared)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.thread_time()
        return self

    def __exit__(self, *exc):
        self.wall = (time.perf_counter() - self.wall) * 1e3
        self.cpu = (time.thread_time() - self.cpu) * 1e3


def wait(app, cond, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.002)
    return cond()


def canvas_rows(args, path: Path, inst) -> tuple[list, dict]:
    from PySide6.QtCore import QPoint
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from cellseg.app.settings import AppSettings
    from cellseg.app.window import MainWindow
    from cellseg.core.project import edits as E

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = MainWindow(AppSettings.from_file(Path(tempfile.mkdtemp()) / "settings.ini"))
    window.resize(1400, 900)
    window.show()
    c = window.editing
    canvas = window.canvas
    viewport = canvas.viewport()
    app.processEvents()
    mem = {"peak rss: set-up (mosaic, window)": rss("VmHWM"), "rss before open": rss()}
    reset_peak()
    rows = []

    def row(name, clocks, target=16.0):
        med, p95 = stats([k.wall for k in clocks])
        rows.append((name, med, p95, stats([k.cpu for k in clocks]), target))

    with Clock() as read:
        window.open_path(path)
        if not wait(app, lambda: window.image is not None):
            raise SystemExit("the image did not open")
    with Clock() as show:
        canvas.set_instances(inst)  # what the window's _show does first
        viewport.repaint()
    mem["peak rss: open + canvas first paint"] = rss("VmHWM")
    reset_peak()
    with Clock() as ann:  # then the editing controller builds its model of the instances
        window.set_current_instances(inst, edited=False)
        viewport.repaint()
    mem["peak rss: + editing model (controller)"] = rss("VmHWM")
    rows.append(("open: read + canvas.set_image", read.wall, None, None, None))
    rows.append(("open: canvas shows instances + paints", show.wall, None, (show.cpu, None),
                 None))
    rows.append(("open -> first paint (read + canvas)", read.wall + show.wall, None, None,
                 2000.0))
    rows.append(("open: + editing model (controller)", ann.wall, None, (ann.cpu, None), None))
    if args.screenshots:
        shot(app, window, args.screenshots / f"large_{args.size}_fit.png")
    mem["rss after open"] = rss()
    reset_peak()
    if c.ann is None or len(c.ann) != len(inst):
        raise SystemExit("the editing controller did not take the instances")

    def timed(action, n=args.repeat):
        clocks = []
        for k in range(n):
            with Clock() as clock:
                action(k)
                viewport.repaint()
            clocks.append(clock)
        return clocks

    def toggles(where):
        row(f"{where}: opacity change", timed(
            lambda k: canvas.set_overlay_style(opacity=0.3 if k % 2 else 0.6)))
        row(f"{where}: class visibility", timed(
            lambda k: canvas.set_overlay_style(hidden_classes=frozenset({1, 2}) if k % 2 == 0
                                               else frozenset())))
        row(f"{where}: overlay on/off", timed(
            lambda k: canvas.set_overlay_style(visible=k % 2 == 1)))
        canvas.set_overlay_style(visible=True, hidden_classes=frozenset(), opacity=0.45)

    def hover(k):
        r = viewport.rect()
        x = r.width() // 4 + (k * 37) % (r.width() // 2)
        y = r.height() // 4 + (k * 23) % (r.height() // 2)
        QTest.mouseMove(viewport, QPoint(x, y))

    canvas.fit_to_window()
    app.processEvents()
    viewport.repaint()
    toggles("fit")
    row("fit: hover mouse move", timed(hover))
    row("fit: zoom step in/out", timed(lambda k: canvas.zoom_by(1.25 if k % 2 == 0 else 0.8)))

    # the costliest scale: just above 50%, level 0 still shows ~4 image pixels per screen pixel
    canvas.zoom_1to1()
    canvas.zoom_by(0.51)
    app.processEvents()
    viewport.repaint()
    row("51%: opacity change", timed(
        lambda k: canvas.set_overlay_style(opacity=0.3 if k % 2 else 0.6)))
    canvas.set_overlay_style(opacity=0.45)

    canvas.zoom_1to1()
    h, w = inst.image_size
    canvas.center_on_pixel(w / 2 + 17, h / 2 + 17)
    app.processEvents()
    viewport.repaint()
    toggles("100%")
    if args.screenshots:
        shot(app, window, args.screenshots / f"large_{args.size}_100.png")
    row("100%: hover mouse move", timed(hover))
    bar = canvas.horizontalScrollBar()
    vbar = canvas.verticalScrollBar()

    def pan(k):
        step = 40 if (k // 20) % 2 == 0 else -40
        bar.setValue(bar.value() + step)
        vbar.setValue(vbar.value() + step // 2)

    row("100%: pan 40 px", timed(pan, max(args.repeat, 60)))

    # brush stroke at 100% on the instance nearest the view centre
    centre = canvas.mapToScene(viewport.rect().center())
    win = c.ann.masks.windows
    mid = np.abs((win[:, 0] + win[:, 2]) / 2 - centre.x()) + np.abs(
        (win[:, 1] + win[:, 3]) / 2 - centre.y())
    uid = int(c.ann.uids[int(np.argmin(mid))])
    s = c.ann.state(uid)
    x0, y0 = (s.window[0] + s.window[2]) / 2, (s.window[1] + s.window[3]) / 2
    c.selected = {uid}
    canvas.center_on_pixel(x0, y0)
    app.processEvents()
    stroke = E.Stroke(c.ann, uid, radius=8, erase=False)
    model, total = [], []
    for k in range(args.steps):
        t = k / args.steps
        x = x0 + 60 * np.cos(6.28 * t) * t
        y = y0 + 60 * np.sin(6.28 * t) * t
        with Clock() as whole:
            with Clock() as part:
                rect = stroke.move_to(x, y)
            c.render_rect(rect)
            viewport.repaint()
        model.append(part)
        total.append(whole)
    row("100%: brush move: editing model", model)
    row("100%: brush move: total", total)
    with Clock() as commit:
        c.push(stroke.finish(), already_applied=True)
        viewport.repaint()
    rows.append(("brush release: commit + refresh", commit.wall, None, (commit.cpu, None), None))
    mem["rss end"] = rss()
    mem["peak rss: toggles, pan, hover, brush"] = rss("VmHWM")
    window._edited.clear()  # the benchmark's stroke is not worth a "save?" question
    window.close()
    return rows, mem


def shot(app, window, path: Path) -> None:
    """The whole window as the screen shows it (run under Xvfb for a real X server)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    app.processEvents()
    window.grab().save(str(path))
    print(f"screenshot: {path}", file=sys.stderr)


def predict_rows(image: np.ndarray, size: int) -> list:
    from cellseg.core.engine import load_predictor
    from cellseg.core.tiling import TileSettings, predict_tiled

    crop = np.ascontiguousarray(image[:size, :size])
    mp = crop.size / 1e6
    rows = []
    fixtures = SHARED / "fixtures" / "detectron2"
    for name in ("mask_rcnn", "cascade_gn_dconv", "pointrend"):
        predictor = load_predictor(fixtures / name / "config.yaml",
                                   fixtures / name / "model_final.pth", device="cpu")
        predictor(crop[:256, :256])  # warm-up (allocator, lazy inits)
        t = time.perf_counter()
        out = predict_tiled(predictor, crop, TileSettings(tile=512, overlap=64, scale=1.0))
        sec = time.perf_counter() - t
        rows.append((name, sec, sec / mp, len(out)))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=16384, help="multiple of 1024 (default 16384)")
    ap.add_argument("--canvas", choices=("auto", "legacy", "tiled"), default="auto")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--steps", type=int, default=100, help="brush mouse moves")
    ap.add_argument("--predict-size", type=int, default=960,
                    help="side of the crop predicted per fixture model (960: 2x2 tiles)")
    ap.add_argument("--no-predict", action="store_true")
    ap.add_argument("--screenshots", type=Path, metavar="DIR",
                    help="save the window at fit and at 100%% as DIR/large_SIZE_{fit,100}.png")
    args = ap.parse_args(argv)

    import tifffile

    try:
        from cellseg.app.canvas import tile_index as tiled
    except ImportError:  # the canvas before the tiled path
        tiled = None
    if args.canvas != "auto":
        if tiled is None:
            raise SystemExit("this canvas has no tiled path: use --canvas auto")
        tiled.TILED_MIN_PIXELS = 0 if args.canvas == "tiled" else 1 << 62
    pixels = args.size * args.size
    legacy = tiled is None or not tiled.uses_tiles((args.size, args.size))
    # half again as much free: the machine may be shared, and others need memory too
    if legacy and mem_available() < 1.5 * LEGACY_BYTES_PER_PIXEL * pixels:
        need = LEGACY_BYTES_PER_PIXEL * pixels / 2**30
        print(f"refusing: the one-image overlay needs ~{need:.1f}"
              f" GiB at {args.size} px, MemAvailable is {mem_available() / 2**30:.1f} GiB",
              file=sys.stderr)
        return 3
    t = time.perf_counter()
    image, inst = mosaic(args.size)
    tmp = Path(tempfile.mkdtemp(prefix="cellseg-large-"))
    path = tmp / "mosaic.tif"
    tifffile.imwrite(path, image)  # uncompressed, contiguous: memory-mappable
    made = time.perf_counter() - t
    try:
        rows, mem = canvas_rows(args, path, inst)
        pred = [] if args.no_predict else predict_rows(image, args.predict_size)
    finally:
        path.unlink(missing_ok=True)
        tmp.rmdir()
    kind = "legacy one-image overlay" if legacy else "tiled multiscale canvas"
    print(f"large image: {args.size}x{args.size} uint16, {len(inst)} instances, {kind} "
          f"(Qt {os.environ.get('QT_QPA_PLATFORM', 'xcb')}, mosaic made and written in "
          f"{made:.1f} s)")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; wall-clock median "
          "and p95, and the GUI thread's CPU time (median, p95)")
    print(f"{'measure':40} {'median ms':>10} {'p95 ms':>8} {'cpu ms':>8} {'cpu p95':>8}  target")
    for name, med, p95, cpu, target in rows:
        p = f"{p95:8.2f}" if p95 is not None else " " * 8
        for v in cpu if cpu is not None else (None, None):
            p += f" {v:8.2f}" if v is not None else " " * 9
        if target is None:
            verdict = ""
        else:
            worst = p95 if p95 is not None else med
            verdict = f"<{target:.0f} wall {'ok' if worst < target else 'SLOW'}"
            if cpu is not None and cpu[1] is not None:
                verdict += f", cpu {'ok' if cpu[1] < target else 'SLOW'}"
        print(f"{name:40} {med:10.2f} {p}  {verdict}")
    for name, v in mem.items():
        print(f"{name:40} {v / 2**20:10.0f} MiB")
    for name, sec, per_mp, n in pred:
        print(f"predict {name:32} {sec:10.1f} s  {per_mp:6.1f} s/MP  ({n} instances, "
              f"{args.predict_size}x{args.predict_size} crop, 512 px tiles, CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
