"""App fixtures: a main window with throw-away settings, real nuclei instances, model paths."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from cellseg.core.structures import CroppedMasks, Instances


@pytest.fixture
def settings(tmp_path):
    from cellseg.app.settings import AppSettings

    return AppSettings.from_file(tmp_path / "settings.ini")


@pytest.fixture
def window(qtbot, settings):
    from cellseg.app.window import MainWindow

    win = MainWindow(settings)
    qtbot.addWidget(win)  # closed at teardown: closeEvent stops the worker threads
    win.resize(1200, 800)
    win.show()
    yield win
    win.close()


@pytest.fixture(scope="session")
def nuclei_image(nuclei_dir) -> np.ndarray:
    return tifffile.imread(nuclei_dir / "img2d.tif")


@pytest.fixture(scope="session")
def nuclei_instances(nuclei_dir) -> Instances:
    """The 125 ground-truth nuclei as Instances: scores rise with label id, 4 classes."""
    labels = tifffile.imread(nuclei_dir / "mask2d.tif")
    masks, ids = CroppedMasks.from_label_image(labels)
    n = len(ids)
    return Instances(labels.shape, masks.tight_boxes(), np.linspace(0.3, 1.0, n, dtype=np.float32),
                     np.arange(n) % 4, masks)


@pytest.fixture(scope="session")
def cascade_model(fixtures_dir) -> tuple[str, str]:
    d = Path(fixtures_dir) / "cascade_gn_dconv"
    return str(d / "config.yaml"), str(d / "model_final.pth")


@pytest.fixture(scope="session")
def pointrend_model(fixtures_dir) -> tuple[str, str]:
    d = Path(fixtures_dir) / "pointrend"
    return str(d / "config.yaml"), str(d / "model_final.pth")
