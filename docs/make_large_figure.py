"""Screenshots of a large image predicted tile by tile (issue 14): docs/large_tiled_*.png.

A 4096 x 4096 16-bit mosaic of the nuclei image (8 x 8 copies, written as a tiled TIFF) is
opened in the app with the PointRend demo model and Models > Tiles on (512 px, overlap 64):
one shot while the tiles run (the status bar counts them), one at fit and one at 100% when done:

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_large_figure.py ../shared/data/nuclei docs
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from PySide6.QtCore import QEventLoop, QTimer
from PySide6.QtWidgets import QApplication

DEMO = Path(__file__).resolve().parents[1] / "resources" / "sample" / "model_pointrend"


def wait_for(app, condition, timeout_s: float = 1800) -> None:
    loop = QEventLoop()
    timer = QTimer()
    timer.timeout.connect(lambda: condition() and loop.quit())
    timer.start(100)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    timer.stop()
    if not condition():
        raise SystemExit("timed out")


def main(nuclei: str, out: str) -> None:
    app = QApplication.instance() or QApplication(["cellseg-gui"])
    from cellseg.app.settings import AppSettings
    from cellseg.app.window import MainWindow
    from cellseg.core.progress import TILE

    folder = Path(tempfile.mkdtemp()) / "large"
    folder.mkdir()
    image = np.tile(tifffile.imread(Path(nuclei) / "img2d.tif"), (8, 8))
    tifffile.imwrite(folder / "mosaic_4096.tif", image, tile=(256, 256), compression="zlib")
    out = Path(out)
    window = MainWindow(AppSettings.from_file(folder.parent / "settings.ini"))
    window.resize(1400, 900)
    window.show()
    panel = window.models_panel
    window.set_model("pointrend", str(DEMO / "config.yaml"), str(DEMO / "model_final.pth"))
    window.post_panel.set_model_choice("pointrend")
    panel.tile_size.setValue(512)
    panel.tile_overlap.setValue(64)
    panel.tiled.setChecked(True)
    tiles = []
    window.service.run_progress.connect(
        lambda key, stage, done, total: stage == TILE and tiles.append((done, total)))
    window.open_path(folder)
    wait_for(app, lambda: tiles and tiles[-1][0] >= 30)
    app.processEvents()
    window.grab().save(str(out / "large_tiled_progress.png"))
    print("progress:", window.run_label.text())
    wait_for(app, lambda: not window.service.busy and window.current_instances() is not None
             and len(window.current_instances()) > 1000)
    app.processEvents()
    window.canvas.fit_to_window()
    app.processEvents()
    window.grab().save(str(out / "large_tiled_fit.png"))
    window.canvas.zoom_1to1()
    window.canvas.center_on_pixel(1500, 1500)
    app.processEvents()
    window.grab().save(str(out / "large_tiled_100.png"))
    print("instances:", len(window.current_instances()))
    window.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
