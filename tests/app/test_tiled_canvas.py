"""The tiled multiscale canvas against the one-image Overlay, on the real nuclei image and
labels, and on a generated 8k x 8k mosaic of them (memory)."""
from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest
import tifffile
from PySide6.QtCore import QPoint, Qt

from cellseg.app.canvas import ImageCanvas, tile_index
from cellseg.app.canvas.overlay import Overlay, prepare_labels
from cellseg.app.canvas.tile_index import GridIndex
from cellseg.app.canvas import tiled as tiled_module
from cellseg.app.canvas.tiled import TiledOverlay
from cellseg.core.structures import CroppedMasks, Instances


@pytest.fixture(scope="module")
def overlapping(nuclei_dir) -> Instances:
    """The 125 nuclei, 4 classes, plus 20 shifted copies overlapping them (stacking by score:
    copies alternate above and below the nucleus they cover)."""
    labels = tifffile.imread(nuclei_dir / "mask2d.tif")
    masks, ids = CroppedMasks.from_label_image(labels)
    n = len(ids)
    pick = np.arange(0, n, n // 20)[:20]
    windows = masks.windows[pick] + np.array([5, 3, 5, 3])
    windows[:, 2:] = np.minimum(windows[:, 2:], (labels.shape[1], labels.shape[0]))
    crops = [masks.crop(i)[:w[3] - w[1], :w[2] - w[0]] for i, w in zip(pick, windows)]
    extra = CroppedMasks.from_crops(labels.shape, windows, crops)
    all_masks = CroppedMasks.cat([masks, extra])
    scores = np.concatenate([np.linspace(0.3, 0.9, n), np.where(np.arange(20) % 2, 0.95, 0.1)])
    m = len(all_masks)
    return Instances(labels.shape, all_masks.tight_boxes(), scores.astype(np.float32),
                     np.arange(m) % 4, all_masks)


def both(instances, tile=128):
    flat, tiles = Overlay(), TiledOverlay(tile=tile)
    for o in (flat, tiles):
        o.set_instances(instances, selected={3, 7})
        o.set_review_state(np.arange(len(instances)) * 7 + 1,
                           np.arange(len(instances)) % 3)  # pending, accepted, rejected
    return flat, tiles


def tile_argb(ov: TiledOverlay, level: int) -> np.ndarray:
    """Every tile of a level, assembled into one (level H, level W) uint32 picture."""
    lh, lw = ov.level_size(level)
    out = np.zeros((lh, lw), np.uint32)
    T = ov.tile_size
    for ty in range(-(-lh // T)):
        for tx in range(-(-lw // T)):
            ov.tile(level, ty, tx)
            t = ov._tiles[(level, ty, tx)]
            out[ty * T:ty * T + t.argb.shape[0], tx * T:tx * T + t.argb.shape[1]] = t.argb
    return out


def tile_codes(ov: TiledOverlay, level: int) -> np.ndarray:
    lh, lw = ov.level_size(level)
    return ov.codes(level, 0, 0, lw, lh)


STYLES = [dict(), dict(opacity=0.8, contours=False), dict(colour_by="class"),
          dict(hidden_classes=frozenset({1, 3}), contour_opacity=0.5), dict(visible=False)]


@pytest.mark.parametrize("style", STYLES)
def test_tiles_at_full_resolution_are_the_overlay_pixel_for_pixel(overlapping, style):
    flat, tiles = both(overlapping)
    flat.set_style(**style)
    tiles.set_style(**style)
    assert np.array_equal(tile_argb(tiles, 0), flat._buffer)


def test_zoomed_out_levels_sample_the_same_labels_and_colours(overlapping):
    """Level L shows every 2**L-th pixel: its labels are the overlay's label image strided, and
    each sample's colour is the overlay's colour of that label (contours are found at the
    level's own resolution, one screen pixel wide)."""
    flat, tiles = both(overlapping)
    for level in (1, 2, 3):
        s = 1 << level
        codes = tile_codes(tiles, level)
        assert np.array_equal(codes // 4, flat.labels[::s, ::s])
        argb = tile_argb(tiles, level)
        assert np.array_equal(argb, flat._lut[codes])
        fill = (codes % 2 == 0) & (flat._code[::s, ::s] % 2 == 0)
        # the hatch of rejected instances is laid out in the level's own pixels (lines stay
        # lines when zoomed out), so compare where both have the same stripe bit
        fill &= (codes & 2) == (flat._code[::s, ::s] & 2)
        assert fill.mean() > 0.5
        assert np.array_equal(argb[fill], flat._buffer[::s, ::s][fill])


def test_hit_tests_agree_with_the_label_image(overlapping):
    flat, tiles = both(overlapping)
    h, w = flat.labels.shape
    ys, xs = np.mgrid[0:h:3, 0:w:3]
    got = np.array([tiles.instance_at(x + 0.5, y + 0.5) for x, y in zip(xs.ravel(), ys.ravel())])
    want = flat.labels[ys.ravel(), xs.ravel()] - 1
    assert np.array_equal(got, want)
    assert (want >= 0).sum() > 1000
    assert tiles.instance_at(-1, 5) == -1 and tiles.instance_at(w, 5) == -1


def test_grid_index_finds_exactly_the_windows_meeting_a_rectangle(overlapping):
    windows = overlapping.masks.windows
    index = GridIndex(windows, overlapping.image_size, cell=64)
    rng = np.random.default_rng(0)
    for _ in range(200):
        x0, y0 = rng.integers(-20, 520, 2)
        x1, y1 = x0 + rng.integers(1, 200), y0 + rng.integers(1, 200)
        want = np.flatnonzero((windows[:, 0] < x1) & (windows[:, 2] > x0)
                              & (windows[:, 1] < y1) & (windows[:, 3] > y0))
        assert np.array_equal(index.query(x0, y0, x1, y1), want)


def test_an_edit_re_renders_only_its_tiles_and_matches_the_overlay(overlapping):
    flat, tiles = both(overlapping)
    before = {k: (t, t.argb.copy()) for k, t in tiles._tiles.items()} if tiles._tiles else {}
    tile_argb(tiles, 0)
    tile_argb(tiles, 2)
    before = {k: (t, t.argb.copy()) for k, t in tiles._tiles.items()}
    n = len(overlapping)
    for ov in (flat, tiles):  # what a brush stroke does: write labels, re-render the rectangle
        ov.labels[100:120, 140:150] = 3
        ov.labels[300:310, 300:310] = n + 5  # a new drawing past the instance count
        ov.update_region(140, 100, 150, 120)
        ov.update_region(300, 300, 310, 310)
    changed = {k for k, (t, old) in before.items() if not np.array_equal(t.argb, old)}
    assert changed == {(0, 0, 1), (0, 2, 2), (2, 0, 0)}
    assert all(tiles._tiles[k] is t for k, (t, _) in before.items())  # no tile was dropped
    assert np.array_equal(tile_argb(tiles, 0), flat._buffer)
    assert tiles.instance_at(145, 110) == 2 and tiles.instance_at(305, 305) == n + 4
    assert tiles.labels[110, 145] == 3
    assert np.array_equal(tiles.labels[95:125, 135:155], flat.labels[95:125, 135:155])
    # the next result replaces the patches
    tiles.set_instances(overlapping)
    flat.set_instances(overlapping)
    assert np.array_equal(tile_argb(tiles, 0), flat._buffer)


@pytest.fixture
def two_canvases(qtbot, nuclei_image, overlapping, monkeypatch):
    canvases = []
    for threshold in (1 << 62, 0):  # the one-image canvas, then the tiled one
        monkeypatch.setattr(tile_index, "TILED_MIN_PIXELS", threshold)
        c = ImageCanvas()
        qtbot.addWidget(c)
        c.resize(500, 400)
        c.show()
        qtbot.waitExposed(c)
        c.set_image(nuclei_image)
        c.set_instances(overlapping, selected={4})
        canvases.append(c)
    assert not canvases[0].tiled and canvases[1].tiled
    return canvases


@pytest.mark.parametrize("zoom", [1.0, 2.0, 4.0])
def test_the_tiled_canvas_shows_the_same_screen(two_canvases, zoom):
    shots = []
    for c in two_canvases:
        c.zoom_1to1()
        c.zoom_by(zoom)
        c.center_on_pixel(201.5, 263.5)
        c.set_overlay_style(opacity=0.6)
        c.viewport().repaint()
        shots.append(c.viewport().grab().toImage())
    a, b = (np.frombuffer(s.constBits(), np.uint8).reshape(s.height(), -1) for s in shots)
    assert a.shape == b.shape and np.array_equal(a, b)
    bgra = a.reshape(a.shape[0], -1, 4)
    assert (bgra[..., 0] != bgra[..., 1]).mean() > 0.2  # coloured: the overlay is on screen


def test_hover_and_click_report_the_same_instance(two_canvases, qtbot, overlapping):
    results = []
    for c in two_canvases:
        c.zoom_1to1()
        c.center_on_pixel(256, 256)
        seen, clicked = [], []
        c.cursor_moved.connect(lambda x, y, v, i: seen.append((x, y, i)))
        c.instance_clicked.connect(clicked.append)
        for k in range(0, 400, 7):
            qtbot.mouseMove(c.viewport(), QPoint(50 + k, 40 + (k * 3) % 300))
        for k in range(0, 400, 23):
            qtbot.mouseClick(c.viewport(), Qt.MouseButton.LeftButton,
                             pos=QPoint(60 + k, 50 + (k * 7) % 300))
        results.append((seen, clicked))
    assert results[0] == results[1]
    seen, clicked = results[0]
    assert sum(i >= 0 for _, _, i in seen) > 10
    assert len(clicked) == len(range(0, 400, 23)) and sum(i >= 0 for i in clicked) > 3


# ------------------------------------------------------------------------ large images
def mosaic(nuclei_dir, size: int):
    """The nuclei image and labels upscaled 2x (labels nearest) and repeated to ``size`` px."""
    image = tifffile.imread(nuclei_dir / "img2d.tif")
    labels = tifffile.imread(nuclei_dir / "mask2d.tif").astype(np.int32)
    image = cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    labels = cv2.resize(labels, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    k = size // image.shape[0]
    one, _ = CroppedMasks.from_label_image(labels)
    oy, ox = np.divmod(np.arange(k * k), k)
    shift = np.stack([ox, oy, ox, oy], 1)[:, None, :] * image.shape[0]
    windows = (one.windows[None] + shift).reshape(-1, 4)
    sizes = (windows[:, 2] - windows[:, 0]) * (windows[:, 3] - windows[:, 1])
    starts = np.concatenate([[0], np.cumsum(sizes)])
    masks = CroppedMasks((size, size), windows, np.tile(one.data, k * k), starts)
    n = len(windows)
    inst = Instances((size, size), masks.tight_boxes(), np.linspace(0.1, 1, n), np.arange(n) % 4,
                     masks)
    return np.tile(image, (k, k)), inst


def test_an_8k_image_with_8000_cells_stays_within_bounded_memory(qtbot, nuclei_dir):
    """Opening, fitting, zooming and panning over the whole 8192 x 8192 mosaic allocates no
    full-size buffer: the canvas's own allocations stay far below one 8k int32 label image
    (256 MiB), and the tile caches within their byte bounds."""
    image, inst = mosaic(nuclei_dir, 8192)
    assert len(inst) == 8000 and tile_index.uses_tiles(image.shape)
    assert prepare_labels(inst, inst.image_size) is None  # the window's worker makes none
    c = ImageCanvas()
    qtbot.addWidget(c)
    c.resize(1000, 800)
    c.show()
    qtbot.waitExposed(c)
    tracemalloc.start()
    try:
        c.set_image(image)
        c.set_instances(inst)
        assert c.tiled and c.overlay.labels.shape == (8192, 8192)
        c.viewport().grab()
        for zoom in (0.25, 1.0):
            c.zoom_1to1()
            c.zoom_by(zoom)
            for y in range(0, 8192, 1500):
                for x in range(0, 8192, 1500):
                    c.center_on_pixel(x, y)
                    c.viewport().grab()  # paints the viewport as the screen would
        c.set_overlay_style(opacity=0.7)
        c.viewport().grab()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert c.overlay.cached_bytes <= tiled_module.OVERLAY_CACHE_BYTES
    assert c.image_tiles._bytes <= tiled_module.IMAGE_CACHE_BYTES
    assert len(c.overlay._tiles) > 100  # it did paint its way over the image
    assert peak < 250 << 20, f"peak {peak / 2**20:.0f} MiB"
    # a hover hit test at 8k goes through the grid index
    x0, y0, x1, y1 = inst.masks.windows[4321]
    crop = inst.masks.crop(4321)
    yy, xx = np.argwhere(crop)[len(np.argwhere(crop)) // 2]
    assert c.overlay.instance_at(x0 + xx, y0 + yy) == 4321


def test_image_tiles_come_from_the_files_pyramid_levels(tmp_path, qtbot, nuclei_image,
                                                        monkeypatch):
    """A pyramidal TIFF opened lazily: each display level reads the file's level nearest below
    it (levels marked here by an offset so that striding level 0 would not match)."""
    from cellseg.core.io.large import open_large

    big = np.tile(nuclei_image, (2, 2))
    path = tmp_path / "pyramid.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(big, tile=(256, 256), compression="zlib", subifds=2)
        tw.write(big[::2, ::2] + 1, tile=(256, 256), compression="zlib", subfiletype=1)
        tw.write(big[::4, ::4] + 2, tile=(256, 256), compression="zlib", subfiletype=1)
    monkeypatch.setattr(tile_index, "TILED_MIN_PIXELS", 0)
    c = ImageCanvas()
    qtbot.addWidget(c)
    c.resize(400, 300)
    c.show()
    qtbot.waitExposed(c)
    with open_large(path) as image:
        c.set_image(image)
        assert c.tiled and c.image_tiles.max_level == 2
        t = c.image_tiles
        assert np.array_equal(t.raw(0, 10, 20, 256, 256), big[20:276, 10:266])
        assert np.array_equal(t.raw(1, 0, 0, 256, 100), big[:200:2, :512:2] + 1)
        assert np.array_equal(t.raw(2, 3, 5, 50, 60), big[20:260:4, 12:212:4] + 2)
        # what is painted is the contrast lookup of those values
        grey = t.tile(1, 0, 0)
        from cellseg.app.canvas import apply_contrast
        want = apply_contrast(big[:512:2, :512:2] + 1, c.contrast)
        got = np.frombuffer(grey.constBits(), np.uint32).reshape(256, 256) & 0xFF
        assert np.array_equal(got, want)
        c.fit_to_window()
        assert not c.viewport().grab().toImage().isNull()
