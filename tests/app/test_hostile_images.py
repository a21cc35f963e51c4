"""A folder with damaged and hostile images next to good ones, through the real window: each bad
image gets its own message (banner when shown, list status and tooltip always), the good ones
still open and predict, and nothing large is ever allocated for the decompression bomb."""
from __future__ import annotations

import shutil

import pytest

from tests.hostile_images import png_bomb, truncated_copy

pytestmark = pytest.mark.slow
MODEL_TIMEOUT = 180_000  # ms: CPU model runs on a shared machine

BAD = {  # file -> what its message must say
    "b_truncated.tif": "truncated TIFF",
    "c_empty.png": "the file is empty",
    "d_bomb.png": "50000x50000 = 2,500,000,000 pixels, above the limit",
}


@pytest.fixture
def hostile_folder(tmp_path, crop_folder, nuclei_dir):
    shutil.copy(crop_folder / "crop_a.tif", tmp_path / "a_good.tif")
    truncated_copy(nuclei_dir / "img2d.tif", tmp_path / "b_truncated.tif")
    (tmp_path / "c_empty.png").write_bytes(b"")
    png_bomb(tmp_path / "d_bomb.png")
    shutil.copy(crop_folder / "crop_c.tif", tmp_path / "e_good.tif")
    return tmp_path


def tooltip(window, index: int) -> str:
    return window.image_list.tree.topLevelItem(index).toolTip(1)


def test_bad_images_get_a_message_each_and_the_rest_predict(window, qtbot, hostile_folder,
                                                            fast_cascade):
    window.post_panel.set_score_threshold(0.2)
    window.set_model("cascade", *fast_cascade)
    assert window.open_path(hostile_folder)
    names = [e.name for e in window.source.entries]
    assert names == ["a_good.tif", *BAD, "e_good.tif"]
    qtbot.waitUntil(lambda: window.current_instances() is not None, timeout=MODEL_TIMEOUT)
    assert len(window.current_instances()) > 0

    # run on all: the good images predict, each bad one is marked with its own reason
    window.run_all()
    qtbot.waitUntil(lambda: window.image_list.status(4) == "predicted"
                    and all(window.image_list.status(i) == "error" for i in (1, 2, 3)),
                    timeout=MODEL_TIMEOUT)
    qtbot.waitUntil(lambda: not window.models_panel.progress.isVisible(), timeout=MODEL_TIMEOUT)
    assert window.image_list.status(0) == "predicted"
    for i, (name, reason) in enumerate(BAD.items(), start=1):
        assert name in tooltip(window, i) and reason in tooltip(window, i), tooltip(window, i)

    # opening each bad image shows its message in the banner, on one line; nothing is shown
    for i, (name, reason) in enumerate(BAD.items(), start=1):
        window.image_list.set_current(i)
        qtbot.waitUntil(lambda: name in window.banner.text(), timeout=30000)
        assert reason in window.banner.text() and "\n" not in window.banner.text()
        assert window.current_instances() is None and window.image is None
    assert "CELLSEG_MAX_PIXELS" in window.banner.text()  # the bomb says how to raise the limit

    # the next good image opens from the cache of the run, and the banner goes away
    window.step(1)
    qtbot.waitUntil(lambda: window.current_instances() is not None, timeout=30000)
    assert window.index == 4 and len(window.current_instances()) > 0
    assert window.banner.text() == ""
    assert window.image_list.status(4) == "predicted"
