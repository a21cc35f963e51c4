"""Tiled prediction in the app (issue 14): the Models panel's Tiles setting, progress per tile,
the stitched result on screen, and Cancel between tiles, through the real window."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PySide6.QtCore import Qt

from cellseg.core.progress import TILE
from cellseg.core.tiling import TileSettings

pytestmark = pytest.mark.slow
MODEL_TIMEOUT = 300_000  # ms: CPU model runs on a shared machine
DEMO = Path(__file__).resolve().parents[2] / "resources" / "sample" / "model_pointrend"


@pytest.fixture
def wide(tmp_path, nuclei_dir):
    """1536 x 1024: 3 x 2 copies of the nuclei image, as a tiled, compressed TIFF."""
    path = tmp_path / "wide" / "mosaic.tif"
    path.parent.mkdir()
    image = np.tile(tifffile.imread(nuclei_dir / "img2d.tif"), (2, 3))
    tifffile.imwrite(path, image, tile=(256, 256), compression="zlib")
    return path


def test_tiles_setting_predicts_tile_by_tile_with_progress_and_cancel(window, qtbot, wide):
    service, panel = window.service, window.models_panel
    tiles = []
    service.run_progress.connect(
        lambda key, stage, done, total: tiles.append((done, total)) if stage == TILE else None)
    window.set_model("pointrend", str(DEMO / "config.yaml"), str(DEMO / "model_final.pth"))
    window.post_panel.set_model_choice("pointrend")
    # the user ticks "Tile images larger than" and sets 512 px, overlap 64 px
    panel.tile_size.setValue(512)
    panel.tile_overlap.setValue(64)
    qtbot.mouseClick(panel.tiled, Qt.MouseButton.LeftButton)
    assert panel.tiled.isChecked() and service.tiling == TileSettings(512, 64, 1.0)
    assert window.settings.tiling() == TileSettings(512, 64, 1.0)  # remembered

    assert window.open_path(wide.parent)
    path = window.source.entries[0].path
    qtbot.waitUntil(lambda: bool(tiles) and tiles[-1][0] >= 1, timeout=MODEL_TIMEOUT)
    total = tiles[0][1]
    assert total == 12 and tiles[0] == (0, 12)  # 4 x 3 tiles of 512 px (stride 448)
    assert "tile " in window.run_label.text()
    assert window.run_progress.maximum() == 12

    # Esc stops the run between tiles (or inside one): nothing cached, no banner
    window.activateWindow()
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not service.busy, timeout=MODEL_TIMEOUT)
    key = service.key_for(path, "pointrend", False)
    assert key.tile == TileSettings(512, 64, 1.0) and service.cached(key) is None
    assert max(d for d, _ in tiles) < 12 and window.banner.text() == ""

    # run again: all six tiles, and the stitched instances on the canvas
    tiles.clear()
    window.run_current()
    qtbot.waitUntil(lambda: service.cached(key) is not None, timeout=MODEL_TIMEOUT)
    assert tiles[-1] == (12, 12)
    raw = service.cached(key)
    assert raw.image_size == (1024, 1536) and len(raw) > 500  # ~104 nuclei per copy, raw scores
    qtbot.waitUntil(lambda: window.current_instances() is not None, timeout=60_000)
    shown = window.current_instances()
    assert 500 <= len(shown) <= 700  # six copies of the ~104 the model finds at 0.5

    # unticking: whole-image prediction again, under its own cache key
    panel.tiled.setChecked(False)
    assert service.tiling is None and window.settings.tiling() is None
    assert service.key_for(path, "pointrend", False).tile is None
