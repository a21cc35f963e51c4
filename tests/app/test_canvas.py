"""Canvas, overlay and contrast on the real nuclei image and its 125 ground-truth nuclei."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QImage

from cellseg.app.canvas import ImageCanvas, apply_contrast, auto_contrast
from cellseg.core.io import to_uint8


@pytest.fixture
def canvas(qtbot, nuclei_image, nuclei_instances):
    c = ImageCanvas()
    qtbot.addWidget(c)
    c.resize(600, 600)
    c.show()
    qtbot.waitExposed(c)
    c.set_image(nuclei_image)
    c.set_instances(nuclei_instances)
    return c


def argb(canvas, x, y) -> tuple[int, int, int, int]:
    v = int(canvas.overlay._buffer[y, x])
    return v >> 24, (v >> 16) & 255, (v >> 8) & 255, v & 255


def interior_pixel(inst, i):
    """A pixel of instance i whose 4-neighbours are all inside it (not on the contour)."""
    crop = inst.masks.crop(i)
    inner = crop.copy()
    inner[1:-1, 1:-1] &= crop[:-2, 1:-1] & crop[2:, 1:-1] & crop[1:-1, :-2] & crop[1:-1, 2:]
    inner[[0, -1], :] = False
    inner[:, [0, -1]] = False
    ys, xs = np.nonzero(inner)
    x0, y0 = inst.masks.windows[i, :2]
    return int(xs[len(xs) // 2] + x0), int(ys[len(ys) // 2] + y0)


# ------------------------------------------------------------------------ contrast
def test_auto_contrast_is_percentile_stretch_and_lut_matches_arithmetic(nuclei_image):
    c = auto_contrast(nuclei_image)
    lo, hi = np.percentile(nuclei_image.astype(np.float64), (1.0, 99.8))
    assert c.limits[0] == pytest.approx((lo, hi), rel=1e-6)
    shown = apply_contrast(nuclei_image, c)
    expected = np.clip((nuclei_image.astype(np.float64) - lo) * 255 / (hi - lo), 0, 255)
    assert shown.dtype == np.uint8
    assert np.abs(shown.astype(int) - expected.astype(np.uint8).astype(int)).max() <= 1
    # the float path gives the same picture as the uint16 lookup table
    as_float = apply_contrast(nuclei_image.astype(np.float32), c)
    assert np.abs(as_float.astype(int) - shown.astype(int)).max() <= 1


def test_display_contrast_never_changes_model_input(nuclei_image):
    before = to_uint8(nuclei_image).copy()
    c = auto_contrast(nuclei_image)
    c.limits[0] = (0, 100)
    apply_contrast(nuclei_image, c)
    assert np.array_equal(to_uint8(nuclei_image), before)


def test_colour_image_per_channel_and_single_channel():
    rng = np.random.default_rng(0)
    rgb = np.stack([rng.integers(0, 1000, (64, 64)), rng.integers(0, 50000, (64, 64)),
                    rng.integers(0, 10, (64, 64))], axis=2).astype(np.uint16)
    c = auto_contrast(rgb)
    assert c.num_channels == 3
    assert c.limits[1, 1] > 10 * c.limits[0, 1]  # each channel has its own window
    shown = apply_contrast(rgb, c)
    assert shown.shape == (64, 64, 3)
    assert all(shown[:, :, k].max() == 255 for k in range(3))
    c.channel = 1
    single = apply_contrast(rgb, c)
    assert single.shape == (64, 64) and np.array_equal(single, shown[:, :, 1])


# ------------------------------------------------------------------------ overlay
def test_overlay_label_image_matches_masks(canvas, nuclei_instances, nuclei_dir):
    import tifffile

    truth = tifffile.imread(nuclei_dir / "mask2d.tif") > 0
    labels = canvas.overlay.labels
    assert np.array_equal(labels > 0, truth)
    assert set(np.unique(labels)) - {0} == set(range(1, len(nuclei_instances) + 1))
    alpha = canvas.overlay._buffer >> 24
    assert np.array_equal(alpha > 0, truth)  # overlay drawn exactly on the cells
    assert canvas.overlay.image.format() == QImage.Format.Format_ARGB32_Premultiplied


def test_opacity_contours_and_class_visibility(canvas, nuclei_instances):
    inst = nuclei_instances
    i = 10
    x, y = interior_pixel(inst, i)
    a0 = argb(canvas, x, y)[0]
    assert a0 == round(0.45 * 255)
    canvas.set_overlay_style(opacity=0.8)
    assert argb(canvas, x, y)[0] == round(0.8 * 255)
    # contour pixels are opaque while contours are on, filled like the interior when off
    x0, y0, x1, y1 = inst.masks.windows[i]
    row = canvas.overlay.labels[int((y0 + y1) // 2)]
    xs = np.flatnonzero(row == i + 1)
    edge_x = int(xs[0])
    assert argb(canvas, edge_x, int((y0 + y1) // 2))[0] == 255
    canvas.set_overlay_style(contours=False)
    assert argb(canvas, edge_x, int((y0 + y1) // 2))[0] == round(0.8 * 255)
    # hiding the instance's class clears exactly that class's pixels
    cls = int(inst.classes[i])
    canvas.set_overlay_style(hidden_classes=frozenset({cls}))
    assert argb(canvas, x, y)[0] == 0
    alpha = canvas.overlay._buffer >> 24
    labels = canvas.overlay.labels
    shown_classes = inst.classes[labels[alpha > 0] - 1]
    assert cls not in set(shown_classes.tolist()) and len(shown_classes)
    assert not canvas.overlay.visible_instances()[i]
    canvas.set_overlay_style(hidden_classes=frozenset(), visible=False)
    assert (canvas.overlay._buffer >> 24).max() == 0


def test_colour_by_class_gives_one_colour_per_class(canvas, nuclei_instances):
    canvas.set_overlay_style(colour_by="class", opacity=1.0, contours=False)
    inst = nuclei_instances
    colours = {}
    for i in range(0, 40):
        colours.setdefault(int(inst.classes[i]), set()).add(argb(canvas, *interior_pixel(inst, i)))
    assert all(len(v) == 1 for v in colours.values())
    assert len({next(iter(v)) for v in colours.values()}) == 4


def test_update_region_rerenders_only_the_rectangle(canvas, nuclei_instances):
    ov = canvas.overlay
    before = ov._buffer.copy()
    ov.labels[100:120, 100:120] = 3  # a brush stroke painting instance index 2
    rect = ov.update_region(100, 100, 120, 120)
    x0, y0, x1, y1 = rect
    assert x0 <= 100 and y0 <= 100 and x1 >= 120 and y1 >= 120 and x1 - x0 <= 24
    changed = np.argwhere(ov._buffer != before)
    assert len(changed)
    assert changed[:, 0].min() >= y0 and changed[:, 0].max() < y1
    assert changed[:, 1].min() >= x0 and changed[:, 1].max() < x1
    # contours and hatch lines of the rectangle continue those around it: the pixel codes
    # are those of the whole image computed afresh
    from cellseg.app.canvas.overlay import _edge_code

    assert np.array_equal(ov._code, _edge_code(ov.labels))
    full = ov._buffer.copy()
    ov.set_style()  # full re-render from the same labels gives the same pixels
    assert np.array_equal(ov._buffer, full)
    # a new label past the instance count gets its own colour
    ov.labels[300:310, 300:310] = len(nuclei_instances) + 5
    ov.update_region(300, 300, 310, 310)
    assert argb(canvas, 305, 305)[0] > 0


def test_instance_at_and_hover_reports(canvas, qtbot, nuclei_instances, nuclei_image):
    i = 42
    x, y = interior_pixel(nuclei_instances, i)
    assert canvas.overlay.instance_at(x + 0.5, y + 0.5) == i
    assert canvas.overlay.instance_at(-1, 5) == -1
    canvas.zoom_1to1()
    canvas.zoom_by(4.0)  # a screen pixel well inside the image pixel
    canvas.center_on_pixel(x, y)
    qtbot.wait(20)  # let the view settle its scroll position
    pos = canvas.mapFromScene(QPointF(x + 0.5, y + 0.5))
    with qtbot.waitSignal(canvas.cursor_moved) as sig:
        qtbot.mouseMove(canvas.viewport(), pos)
    px, py, value, index = sig.args
    assert (px, py) == (x, y)
    assert value == str(int(nuclei_image[y, x]))
    assert index == i
    assert canvas.hover_layer.index == i


# ------------------------------------------------------------------------ zoom and tools
def test_wheel_zoom_keeps_point_under_cursor(canvas, qtbot):
    canvas.fit_to_window()
    anchor = QPointF(200, 150)
    before = canvas.mapToScene(anchor.toPoint())
    z = canvas.zoom
    canvas.zoom_by(2.0, anchor)
    assert canvas.zoom == pytest.approx(2 * z)
    after = canvas.mapToScene(anchor.toPoint())
    assert abs(after.x() - before.x()) < 1.0 and abs(after.y() - before.y()) < 1.0
    canvas.zoom_1to1()
    assert canvas.zoom == 1.0
    canvas.fit_to_window()
    vp = canvas.viewport().rect()
    assert 512 * canvas.zoom <= max(vp.width(), vp.height()) + 1


class RecordingTool:
    """A minimal editing tool: records image coordinates, consumes left-button events."""

    def __init__(self):
        self.events = []

    def mouse_press(self, x, y, event):
        self.events.append(("press", x, y))
        return event.button() == Qt.MouseButton.LeftButton

    def mouse_move(self, x, y, event):
        self.events.append(("move", x, y))
        return bool(event.buttons() & Qt.MouseButton.LeftButton)

    def mouse_release(self, x, y, event):
        self.events.append(("release", x, y))
        return event.button() == Qt.MouseButton.LeftButton


def test_tool_receives_image_coordinates_and_blocks_panning(canvas, qtbot):
    canvas.zoom_1to1()
    canvas.zoom_by(4.0)
    canvas.center_on_pixel(256, 256)
    qtbot.wait(20)
    tool = RecordingTool()
    canvas.set_tool(tool)
    pos = canvas.mapFromScene(QPointF(250.5, 260.5))
    h0, v0 = canvas.horizontalScrollBar().value(), canvas.verticalScrollBar().value()
    qtbot.mousePress(canvas.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    qtbot.mouseRelease(canvas.viewport(), Qt.MouseButton.LeftButton, pos=pos + QPoint(40, 0))
    kinds = [e[0] for e in tool.events]
    assert kinds[0] == "press" and kinds[-1] == "release"
    _, x, y = tool.events[0]
    assert x == pytest.approx(250.5, abs=0.3) and y == pytest.approx(260.5, abs=0.3)
    _, x2, _ = tool.events[-1]
    assert x2 == pytest.approx(250.5 + 40 / canvas.zoom, abs=0.3)
    assert (canvas.horizontalScrollBar().value(), canvas.verticalScrollBar().value()) == (h0, v0)
    canvas.set_tool(None)
    assert canvas.tool is None


def test_labels_prepared_off_thread_render_the_same(canvas, nuclei_instances):
    from cellseg.app.canvas.overlay import prepare_labels

    direct = canvas.overlay._buffer.copy()
    labels, code = prepare_labels(nuclei_instances, nuclei_instances.image_size)
    canvas.set_instances(None)
    assert (canvas.overlay._buffer >> 24).max() == 0
    canvas.set_instances(nuclei_instances, prepared=(labels, code))
    assert canvas.overlay.labels is labels
    assert np.array_equal(canvas.overlay._buffer, direct)


def test_thousands_of_repaints_do_not_abort_the_canvas(tmp_path):
    # PySide6 6.12 on CPython 3.11 takes a reference off None at every void method call; a
    # canvas without torch imported aborted ("deallocating None") after ~1,600 repaints. Fails
    # without cellseg.app.keep_none_alive. A child process: the abort would end pytest too.
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from PySide6.QtWidgets import QApplication\n"
        "app = QApplication([])\n"
        "from cellseg.app.canvas import ImageCanvas\n"
        "canvas = ImageCanvas(); canvas.resize(240, 180); canvas.show()\n"
        "canvas.set_image(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))\n"
        "app.processEvents()\n"
        "for _ in range(4000):\n"
        "    canvas.viewport().repaint()\n"
        "print('repainted')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env={**__import__("os").environ,
                                           "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0 and out.stdout.strip() == "repainted", out.stderr[-2000:]
