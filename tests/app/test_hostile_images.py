"""A folder with damaged and hostile images next to good ones, through the real window: each bad
image gets its own message (banner when shown, list status and tooltip always), the good ones
still open and predict, and nothing large is ever allocated for the decompression bomb."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import tifffile

from tests.hostile_images import png_bomb, truncated_copy

pytestmark = pytest.mark.slow
MODEL_TIMEOUT = 180_000  # ms: CPU model runs on a shared machine

BAD = {  # index in the list -> file, what its message must say
    1: ("b_truncated.tif", "truncated TIFF"),
    2: ("c_empty.png", "the file is empty"),
    3: ("d_bomb.png", "50000x50000 = 2,500,000,000 pixels, above the limit"),
    5: ("f_stack.tif", "3-D stack (2 Z-planes"),
}


@pytest.fixture
def hostile_folder(tmp_path, crop_folder, nuclei_dir):
    shutil.copy(crop_folder / "crop_a.tif", tmp_path / "a_good.tif")
    truncated_copy(nuclei_dir / "img2d.tif", tmp_path / "b_truncated.tif")
    (tmp_path / "c_empty.png").write_bytes(b"")
    png_bomb(tmp_path / "d_bomb.png")
    crop = tifffile.imread(crop_folder / "crop_c.tif")
    ok, png = cv2.imencode(".png", crop)  # a good 16-bit PNG behind a .tif name
    (tmp_path / "e_png_named.tif").write_bytes(png.tobytes())
    tifffile.imwrite(tmp_path / "f_stack.tif", np.stack([crop, crop]), imagej=True,
                     metadata={"axes": "ZYX"})
    return tmp_path


def tooltip(window, index: int) -> str:
    return window.image_list.tree.topLevelItem(index).toolTip(1)


def test_bad_images_get_a_message_each_and_the_rest_predict(window, qtbot, hostile_folder,
                                                            fast_cascade):
    window.post_panel.set_score_threshold(0.2)
    window.set_model("cascade", *fast_cascade)
    assert window.open_path(hostile_folder)
    names = [e.name for e in window.source.entries]
    assert names == ["a_good.tif", "b_truncated.tif", "c_empty.png", "d_bomb.png",
                     "e_png_named.tif", "f_stack.tif"]
    qtbot.waitUntil(lambda: window.current_instances() is not None, timeout=MODEL_TIMEOUT)
    assert len(window.current_instances()) > 0

    # run on all: the good images predict, each bad one is marked with its own reason
    window.run_all()
    qtbot.waitUntil(lambda: window.image_list.status(4) == "predicted"
                    and all(window.image_list.status(i) == "error" for i in BAD),
                    timeout=MODEL_TIMEOUT)
    qtbot.waitUntil(lambda: not window.models_panel.progress.isVisible(), timeout=MODEL_TIMEOUT)
    assert window.image_list.status(0) == "predicted"
    for i, (name, reason) in BAD.items():
        assert name in tooltip(window, i) and reason in tooltip(window, i), tooltip(window, i)

    # opening each bad image shows its message in the banner, on one line; nothing is shown
    for i, (name, reason) in BAD.items():
        window.image_list.set_current(i)
        qtbot.waitUntil(lambda: name in window.banner.text(), timeout=30000)
        assert reason in window.banner.text() and "\n" not in window.banner.text()
        assert window.current_instances() is None and window.image is None
        if name == "d_bomb.png":
            assert "CELLSEG_MAX_PIXELS" in window.banner.text()  # says how to raise the limit

    # the good PNG behind a .tif name opens from the run's cache, and the banner goes away
    window.step(-1)
    qtbot.waitUntil(lambda: window.current_instances() is not None, timeout=30000)
    assert window.index == 4 and len(window.current_instances()) > 0
    assert window.banner.text() == ""
    assert window.image_list.status(4) == "predicted"
