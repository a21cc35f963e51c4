"""Cancelling the current image's model run (issue 18, item 4) through the real window: a TTA
run of the fixture Mask R-CNN on the 512 px nuclei image, its per-pass progress, and Esc, the
Model menu's Cancel and the Models panel's Cancel button stopping it between passes."""
from __future__ import annotations

import time

import pytest
from PySide6.QtCore import Qt

pytestmark = pytest.mark.slow
MODEL_TIMEOUT = 180_000  # ms: CPU model runs on a shared machine


@pytest.fixture
def mask_rcnn(fixtures_dir) -> tuple[str, str]:
    d = fixtures_dir / "mask_rcnn"  # TEST.AUG: 6 sizes, 400-900 px, flipped: 8 passes
    return str(d / "config.yaml"), str(d / "model_final.pth")


def test_esc_stops_the_tta_run_between_passes_and_keeps_the_plain_preview(
        window, qtbot, nuclei_dir, mask_rcnn):
    # Fails without the fix: Cancel stayed disabled, Esc only dropped pending runs and the TTA
    # run went on to the end (and into the cache); there was no per-pass progress.
    from cellseg.app.results import PLAIN_TTA_CANCELLED, PLAIN_WHILE_TTA, RUN_CANCELLED

    service = window.service
    passes = []  # (done, total, seconds) of the TTA run, as the window receives them
    service.run_progress.connect(lambda key, stage, done, total: passes.append(
        (done, total, time.perf_counter())) if stage == "TTA pass" else None)
    window.post_panel.tta.setChecked(True)
    window.set_model("cascade", *mask_rcnn)
    assert not window.registry["cancel"].isEnabled()  # nothing runs yet
    assert window.open_path(nuclei_dir)
    path = window.source.entries[0].path
    tta_key = service.key_for(path, "cascade", True)
    plain_key = service.key_for(path, "cascade", False)

    # the plain prediction comes first; then TTA runs, pass by pass, shown in the status bar
    qtbot.waitUntil(lambda: window.result_label.text() == PLAIN_WHILE_TTA
                    and window.current_instances() is not None, timeout=MODEL_TIMEOUT)
    plain = window.current_instances()
    qtbot.waitUntil(lambda: any(done >= 2 for done, _, _ in passes), timeout=MODEL_TIMEOUT)
    assert service.models.running_tag == tta_key
    total = passes[0][1]
    assert total == 8 and [d for d, _, _ in passes[:3]] == [0, 1, 2]
    two_passes = passes[2][2] - passes[0][2]
    assert window.run_progress.isVisible() and window.run_progress.maximum() == total
    assert window.run_progress.value() >= 2
    assert f"TTA pass 3/{total}" in window.run_label.text() or window.run_progress.value() > 2
    assert window.registry["cancel"].isEnabled()
    assert window.models_panel.cancel_button.isEnabled()

    window.activateWindow()
    asked = time.perf_counter()
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not service.busy, timeout=MODEL_TIMEOUT)
    stopped = time.perf_counter() - asked
    # within one stage: well before the two passes the run had already taken
    assert stopped < two_passes, (stopped, two_passes)
    assert max(done for done, _, _ in passes) < total  # it did not run to the end
    assert service.cached(tta_key) is None and service.failure(tta_key) is None
    assert service.cached(plain_key) is not None
    assert window.current_instances() is plain  # the preview stays on screen
    assert window.result_label.text() == PLAIN_TTA_CANCELLED
    assert window.statusBar().currentMessage() == RUN_CANCELLED
    assert window.banner.text() == "" and window.last_error == ""
    assert not window.registry["cancel"].isEnabled()
    assert not window.models_panel.cancel_button.isEnabled()
    assert not window.run_progress.isVisible()
    assert window.image_list.status(0) == "predicted"

    # a post-processing change re-composes the preview; it does not restart the cancelled TTA
    window.post_panel.set_score_threshold(0.6)
    qtbot.waitUntil(lambda: window.current_instances() is not plain, timeout=30_000)
    assert not service.busy and window.result_label.text() == PLAIN_TTA_CANCELLED

    # Run (Ctrl+Return) runs it again; the Model menu's Cancel stops it as Esc did
    passes.clear()
    qtbot.keyClick(window, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: service.models.running_tag == tta_key and bool(passes),
                    timeout=MODEL_TIMEOUT)
    assert window.registry["cancel"].isEnabled()
    window.registry["cancel"].trigger()
    qtbot.waitUntil(lambda: not service.busy, timeout=MODEL_TIMEOUT)
    assert service.cached(tta_key) is None and window.banner.text() == ""
    assert max(done for done, _, _ in passes) < total

    # and the Models panel's Cancel button
    passes.clear()
    window.run_current()
    qtbot.waitUntil(lambda: service.models.running_tag == tta_key and bool(passes),
                    timeout=MODEL_TIMEOUT)
    qtbot.mouseClick(window.models_panel.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not service.busy, timeout=MODEL_TIMEOUT)
    assert service.cached(tta_key) is None and window.last_error == ""
    assert not window.models_panel.cancel_button.isEnabled()
