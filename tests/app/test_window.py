"""The review window end to end: real nuclei images, the fixture models run through the worker,
post-processing toggles checked against ``core.postprocess.compose``, and error paths."""
from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
from PySide6.QtCore import QPointF
from PySide6.QtGui import QImage

from cellseg.core.postprocess.pipeline import compose

pytestmark = pytest.mark.slow
MODEL_TIMEOUT = 180_000  # ms: CPU model runs on a shared machine


def wait_shown(qtbot, window, predicate=lambda inst: True, timeout=MODEL_TIMEOUT):
    qtbot.waitUntil(lambda: window.current_instances() is not None
                    and predicate(window.current_instances()), timeout=timeout)
    return window.current_instances()


def same(a, b) -> bool:
    return (len(a) == len(b) and np.allclose(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
            and np.array_equal(a.classes, b.classes))


def expected(window, raw_models: dict, **changes):
    """What core says the window should show for the panel's current values."""
    return compose(raw_models, replace(window.post_panel.settings().pipeline(), **changes))


def raw_of(window, model: str, tta: bool = False):
    path = window.source.entries[window.index].path
    return window.service.cached(window.service.key_for(path, model, tta))


def test_nuclei_with_fixture_cascade_and_postprocessing_toggles(window, qtbot, nuclei_dir,
                                                                cascade_model):
    assert window.open_path(nuclei_dir)
    assert window.image_list.count() == 1
    qtbot.waitUntil(lambda: window.image is not None, timeout=10000)
    assert window.image.dtype == np.uint16  # the canvas keeps the data; display is separate
    runs = []
    window.service.raw_ready.connect(runs.append)
    window.post_panel.set_score_threshold(0.3)
    window.set_model("cascade", *cascade_model)
    shown = wait_shown(qtbot, window)
    raw = raw_of(window, "cascade")
    assert raw is not None and len(runs) == 1
    assert same(shown, expected(window, {"cascade": raw}))
    assert len(shown) > 10 and (shown.scores >= 0.3).all()
    assert window.image_list.status(0) == "predicted"
    assert window.image_list.cell_count(0) == str(len(shown))
    assert sum(window.legend.counts().values()) == len(shown)
    assert set(np.unique(window.canvas.overlay.labels)) - {0} <= set(range(1, len(shown) + 1))
    assert "cpu" in window.device_label.text()

    # Soft-NMS: re-composed from the cached raw output, no model run
    before = shown
    window.post_panel.soft_nms.setChecked(True)
    soft = wait_shown(qtbot, window, lambda inst: inst is not before, timeout=30000)
    assert len(runs) == 1 and not window.service.busy
    want = expected(window, {"cascade": raw})
    assert window.post_panel.settings().soft_nms is True
    assert same(soft, want)
    assert not same(soft, before)  # Soft-NMS decays overlapping scores: the set changes

    # score threshold: fewer instances, exactly core's
    window.post_panel.set_score_threshold(0.7)
    high = wait_shown(qtbot, window, lambda inst: inst is not soft, timeout=30000)
    assert same(high, expected(window, {"cascade": raw}))
    assert len(high) < len(soft) and (high.scores >= 0.7).all()
    assert len(runs) == 1

    # back to the first settings: the composed result is the same as the first time
    window.post_panel.soft_nms.setChecked(False)
    window.post_panel.set_score_threshold(0.3)
    again = wait_shown(qtbot, window, lambda inst: same(inst, before), timeout=30000)
    assert same(again, before) and len(runs) == 1


def test_tta_and_wbf_ensemble_follow_core(window, qtbot, crop_folder, fast_cascade,
                                          fast_pointrend):
    window.post_panel.set_score_threshold(0.2)
    window.set_model("cascade", *fast_cascade)
    window.set_model("pointrend", *fast_pointrend)
    assert window.open_path(crop_folder)
    plain = wait_shown(qtbot, window)
    raw = raw_of(window, "cascade")
    assert same(plain, expected(window, {"cascade": raw}))

    # TTA is a model-run option: a new raw output (cache key has tta=True)
    window.post_panel.tta.setChecked(True)
    tta = wait_shown(qtbot, window, lambda inst: inst is not plain)
    raw_tta = raw_of(window, "cascade", tta=True)
    assert raw_tta is not None and raw_of(window, "cascade") is raw  # plain result still cached
    assert same(tta, expected(window, {"cascade": raw_tta}))
    assert not same(tta, plain)

    # TTA off again: straight from the cache
    window.post_panel.tta.setChecked(False)
    back = wait_shown(qtbot, window, lambda inst: same(inst, plain), timeout=30000)
    assert same(back, plain)

    # WBF ensemble of both models
    window.post_panel.set_model_choice("ensemble")
    fused = wait_shown(qtbot, window, lambda inst: not same(inst, plain))
    raws = {"cascade": raw, "pointrend": raw_of(window, "pointrend")}
    assert raws["pointrend"] is not None
    assert window.post_panel.settings().pipeline().wbf is True
    assert same(fused, expected(window, raws))
    window.post_panel.set_model_choice("pointrend")
    only_pr = wait_shown(qtbot, window, lambda inst: not same(inst, fused), timeout=30000)
    assert same(only_pr, expected(window, {"pointrend": raws["pointrend"]}))


def test_worker_errors_leave_the_window_usable(window, qtbot, tmp_path, crop_folder, fast_cascade):
    shutil.copy(crop_folder / "crop_a.tif", tmp_path / "a_good.tif")
    (tmp_path / "b_broken.tif").write_bytes(b"II*\x00 truncated, not a TIFF")
    bad_weights = tmp_path / "model_final.pth"
    bad_weights.write_bytes(b"not a checkpoint at all")

    # a bad checkpoint: a message in the window, nothing shown, the window still responds
    assert window.open_path(tmp_path)
    window.set_model("cascade", fast_cascade[0], str(bad_weights))
    qtbot.waitUntil(lambda: str(bad_weights) in window.banner.text(), timeout=MODEL_TIMEOUT)
    assert window.current_instances() is None
    assert window.image_list.status(0) == "error"
    window.canvas.zoom_by(2.0)
    window.display_panel.opacity.setValue(80)

    # the right checkpoint: predictions appear
    window.set_model("cascade", *fast_cascade)
    good = wait_shown(qtbot, window)
    assert len(good) > 0 and window.image_list.status(0) == "predicted"

    # a corrupt image: its error is shown, and stepping back works
    window.step(1)
    qtbot.waitUntil(lambda: "b_broken.tif" in window.banner.text(), timeout=30000)
    assert window.image_list.status(1) == "error"
    assert window.current_instances() is None
    window.step(-1)
    again = wait_shown(qtbot, window, timeout=30000)
    assert same(again, good)
    assert window.canvas.overlay.style.opacity == pytest.approx(0.8)


def test_run_all_statuses_hover_and_review(window, qtbot, crop_folder, fast_cascade):
    window.set_model("cascade", *fast_cascade)
    window.post_panel.set_score_threshold(0.2)
    assert window.open_path(crop_folder)
    first = wait_shown(qtbot, window)
    window.run_all()
    qtbot.waitUntil(lambda: all(window.image_list.status(i) == "predicted" for i in range(3)),
                    timeout=MODEL_TIMEOUT)
    assert all(int(window.image_list.cell_count(i)) > 0 for i in range(3))
    assert not window.models_panel.progress.isVisible()

    # hover: status bar names the instance under the cursor with its class, score and area
    i = int(np.argmax(first.masks.areas()))
    ys, xs = np.nonzero(window.canvas.overlay.labels == i + 1)
    x, y = int(xs[len(xs) // 2]), int(ys[len(ys) // 2])
    window.canvas.zoom_1to1()
    window.canvas.zoom_by(4.0)
    window.canvas.center_on_pixel(x, y)
    qtbot.wait(20)
    pos = window.canvas.mapFromScene(QPointF(x + 0.5, y + 0.5))
    qtbot.mouseMove(window.canvas.viewport(), pos)
    qtbot.waitUntil(lambda: window.instance_label.text() != "", timeout=5000)
    text = window.instance_label.text()
    # the id History names (the editing model's uid), as in the app
    assert f"#{window.editing.uid_at_position(i)} " in text
    assert f"{first.scores[i]:.2f}" in text
    assert f"area {int(first.masks.areas()[i])} px" in text
    assert f"value {int(window.image[y, x])}" in window.pixel_label.text()

    window.toggle_reviewed()
    assert window.image_list.status(0) == "reviewed"
    # the editing hook: replacing the instances marks the image edited and redraws
    window.toggle_reviewed()
    window.set_current_instances(first[np.arange(len(first)) != i])
    assert window.image_list.status(0) == "edited"
    assert window.canvas.overlay.instance_at(x, y) != i or len(window.current_instances()) < len(first)
    assert len(window.current_instances()) == len(first) - 1


def test_screenshot_entry_point(qtbot, tmp_path, crop_folder, fast_cascade):
    from cellseg.app.main import main

    out = tmp_path / "shot.png"
    rc = main([str(crop_folder / "crop_b.tif"), "--config", fast_cascade[0], "--weights",
               fast_cascade[1], "--screenshot", str(out), "--settings", str(tmp_path / "s.ini"),
               "--device", "cpu", "--score-threshold", "0.2", "--size", "1100x700"])
    assert rc == 0 and out.is_file()
    shot = QImage(str(out))
    assert (shot.width(), shot.height()) == (1100, 700)
    # the overlay is in the picture: many saturated (coloured) pixels, not just gray
    arr = np.frombuffer(shot.convertToFormat(QImage.Format.Format_RGB888).constBits(),
                        np.uint8).reshape(700, -1)[:, :1100 * 3].reshape(700, 1100, 3).astype(int)
    colourful = (arr.max(axis=2) - arr.min(axis=2)) > 60
    assert colourful.sum() > 2000


def test_screenshot_with_bad_arguments_fails_cleanly(capsys):
    from cellseg.app.main import main

    assert main(["--config", "only-config.yaml"]) == 2
    assert "--weights" in capsys.readouterr().err


def test_overlay_key_and_menu_hide_and_show_the_overlay(window, qtbot):
    # issue 18.7: O and View > Show overlay raised a TypeError and left the overlay on
    from PySide6.QtCore import Qt

    action, box = window.registry["overlay"], window.display_panel.show_overlay
    window.canvas.setFocus()
    qtbot.keyClick(window.canvas, Qt.Key.Key_O)
    assert not action.isChecked() and not box.isChecked()
    assert not window.canvas.overlay.style.visible
    action.trigger()  # the menu entry
    assert action.isChecked() and box.isChecked() and window.canvas.overlay.style.visible
    box.setChecked(False)  # the Display panel's checkbox keeps the menu tick in step
    assert not action.isChecked() and not window.canvas.overlay.style.visible
