"""App fixtures: a main window with throw-away settings, real nuclei instances, model paths."""
from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
import tifffile

from cellseg.core.structures import CroppedMasks, Instances


@pytest.fixture(autouse=True)
def _collect_widgets_on_the_gui_thread(qapp):
    """Destroy each test's leftover widgets here, on the GUI thread, before the next test's
    worker threads run (a collection inside a worker dead-locks PySide)."""
    yield
    gc.collect()


@pytest.fixture
def settings(tmp_path):
    from cellseg.app.settings import AppSettings

    return AppSettings.from_file(tmp_path / "settings.ini")


def _forget_unsaved_edits(win) -> None:
    """A test's edits made without a project would ask "Save in a new project?" on close."""
    win.forget_unsaved()


@pytest.fixture
def window(qtbot, settings):
    from cellseg.app.window import MainWindow

    win = MainWindow(settings)
    # closed at teardown: closeEvent stops the worker threads
    qtbot.addWidget(win, before_close_func=_forget_unsaved_edits)
    win.resize(1200, 800)
    win.show()
    yield win
    _forget_unsaved_edits(win)
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


FAST_CONFIG = """\
_BASE_: {base}
# the fixture model at a smaller test size: same weights, a few times faster on a CPU
INPUT:
  MIN_SIZE_TEST: 256
  MAX_SIZE_TEST: 512
TEST:
  AUG:
    MIN_SIZES: [256]
    MAX_SIZE: 512
"""


def _fast(tmp_path_factory, name, model) -> tuple[str, str]:
    config = tmp_path_factory.mktemp(name) / "config.yaml"
    config.write_text(FAST_CONFIG.format(base=model[0]))
    return str(config), model[1]


@pytest.fixture(scope="session")
def fast_cascade(tmp_path_factory, cascade_model) -> tuple[str, str]:
    """A user config that takes the fixture cascade config as _BASE_ and tests at 256 px."""
    return _fast(tmp_path_factory, "fast_cascade", cascade_model)


@pytest.fixture(scope="session")
def fast_pointrend(tmp_path_factory, pointrend_model) -> tuple[str, str]:
    return _fast(tmp_path_factory, "fast_pointrend", pointrend_model)


@pytest.fixture(scope="session")
def crop_folder(tmp_path_factory, nuclei_dir) -> Path:
    """Three 192x192 crops of the nuclei image (uint16 TIFFs), a folder to open."""
    image = tifffile.imread(nuclei_dir / "img2d.tif")
    folder = tmp_path_factory.mktemp("crops")
    for name, (y, x) in (("crop_a", (0, 0)), ("crop_b", (160, 200)), ("crop_c", (320, 320))):
        tifffile.imwrite(folder / f"{name}.tif", image[y:y + 192, x:x + 192])
    return folder
