"""Train > Fine-tune... in the real window: a short training on a real project of reviewed
nuclei tiles, started from the dialog, followed live, offered for loading at the end."""
from __future__ import annotations

import json
import math
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from cellseg.core.coco.dataset import CocoImage
from cellseg.core.coco.writer import write_coco
from cellseg.core.project import edits as E
from cellseg.core.project.exchange import import_coco
from cellseg.core.project.store import ProjectStore
from cellseg.core.structures import CroppedMasks, Instances

TILES = [(0, 0), (0, 128), (128, 0), (128, 128), (256, 256)]
FAST = ("INPUT.MIN_SIZE_TRAIN (128,) INPUT.MIN_SIZE_TEST 128 INPUT.CROP.ENABLED False "
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE 64 SOLVER.WARMUP_ITERS 0 SEED 0")


def make_project(tmp_path: Path, nuclei_dir: Path, reviewed=5) -> Path:
    image = tifffile.imread(nuclei_dir / "img2d.tif")
    labels = tifffile.imread(nuclei_dir / "mask2d.tif")
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    ims, inst = [], []
    for i, (y, x) in enumerate(TILES):
        tifffile.imwrite(images_dir / f"tile{i}.tif", image[y:y + 128, x:x + 128])
        m, _ = CroppedMasks.from_label_image(labels[y:y + 128, x:x + 128])
        ims.append(CocoImage(i + 1, f"tile{i}.tif", 128, 128))
        inst.append(Instances((128, 128), m.tight_boxes().astype(np.float32),
                              np.ones(len(m), np.float32), np.zeros(len(m), np.int64), m))
    write_coco(tmp_path / "gt.json", ims, ["nucleus"], inst)
    project = tmp_path / "nuclei.cellseg"
    with ProjectStore.create(project, images_dir) as store:
        import_coco(store, tmp_path / "gt.json", images_root=images_dir)
        for rec in store.images()[:reviewed]:
            store.save_edit(rec.id, E.set_image_reviewed(store.load(rec.id)))
    return project


def open_dialog(window):

    action = window.registry["train"]
    train_menu = next(a.menu() for a in window.menuBar().actions()
                      if a.text().replace("&", "") == "Train")
    assert action in train_menu.actions()
    assert [a.text() for a in train_menu.actions()].count("&Fine-tune...") == 1
    action.trigger()
    dialog = window.training.dialog
    assert dialog is not None and dialog.isVisible()
    return dialog


def fill(dialog, fixtures_dir, project, output, max_iter, eval_period):
    d = fixtures_dir / "mask_rcnn"
    dialog.config_edit.setText(str(d / "config.yaml"))
    dialog.weights_edit.setText(str(d / "model_final.pth"))
    dialog.project_edit.setText(str(project))
    dialog.output_edit.setText(str(output))
    dialog.max_iter.setValue(max_iter)
    dialog.base_lr.setValue(0.002)
    dialog.batch.setValue(2)
    dialog.checkpoint_period.setValue(1000)
    dialog.eval_period.setValue(eval_period)
    dialog.device.setCurrentText("cpu")
    dialog.extra.setText(FAST)
    dialog.panel.timer.setInterval(100)


def test_fine_tune_from_the_dialog(qtbot, window, fixtures_dir, nuclei_dir, tmp_path):
    from PySide6.QtCore import Qt

    project = make_project(tmp_path, nuclei_dir)
    dialog = open_dialog(window)
    out = tmp_path / "run"
    fill(dialog, fixtures_dir, project, out, max_iter=8, eval_period=4)
    panel = dialog.panel
    lengths = []
    panel.metrics_updated.connect(
        lambda n: lengths.append(len(panel.curves["total_loss"].getData()[0])
                                 if "total_loss" in panel.curves else 0))
    with qtbot.waitSignal(panel.done, timeout=240_000) as done:
        qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
        assert dialog.stack.currentWidget() is panel
        assert panel.runner.running()
    assert done.args == [0], panel.log.toPlainText()
    # reproducible split: 4 training tiles, 1 validation tile
    assert len(dialog.split.train_names) == 4 and len(dialog.split.val_names) == 1
    # the curves grew while training ran (several polls saw new rows), and hold every iteration
    assert len([n for n in lengths if n > 0]) >= 2 and lengths == sorted(lengths)
    assert list(panel.curves["total_loss"].getData()[0]) == list(range(8))
    assert "loss_mask" in panel.curves
    ap_x, ap_y = panel.curves["segm/AP"].getData()
    assert list(ap_x) == [3, 7] and all(0 <= v <= 100 for v in ap_y)
    assert panel.progress.value() == panel.progress.maximum() == 8
    assert "iter 8/8" in panel.log.toPlainText()
    # AP before/after on the validation tile, and the new weights offered
    assert panel.ap_table.isVisible() and panel.ap_table.rowCount() >= 6
    first = [panel.ap_table.item(0, j).text() for j in range(3)]
    assert first[0] == "bbox AP" and first[1] != "-" and first[2] != "-"
    assert panel.load_button.isEnabled()
    assert "Load the new weights" in panel.status.text()
    panel.load_button.click()
    assert window.settings.model_paths("cascade") == (str(out / "config.yaml"),
                                                      str(out / "model_final.pth"))
    saved = json.loads((out / "evaluation" / "final.json").read_text())
    assert panel.ap_table.item(0, 2).text() == f"{saved['bbox']['AP']:.2f}"


def test_stop_from_the_dialog_saves_a_checkpoint(qtbot, window, fixtures_dir, nuclei_dir,
                                                 tmp_path):
    from PySide6.QtCore import Qt

    project = make_project(tmp_path, nuclei_dir)
    dialog = open_dialog(window)
    out = tmp_path / "run"
    fill(dialog, fixtures_dir, project, out, max_iter=5000, eval_period=0)
    dialog.log_period = 1
    panel = dialog.panel
    qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "total_loss" in panel.curves
                    and len(panel.curves["total_loss"].getData()[0]) >= 2, timeout=120_000)
    with qtbot.waitSignal(panel.done, timeout=120_000) as done:
        panel.stop_button.click()
    assert done.args == [0]
    log = panel.log.toPlainText()
    assert "stopped at iteration" in log and not panel.ended
    assert panel.weights is not None and panel.weights.name.startswith("model_")
    assert panel.weights.name != "model_final.pth" and panel.load_button.isEnabled()
    # the log says what was kept, and how to go on from it
    assert f"stopped (the trainer stopped): kept {panel.weights.name}" in log
    assert (out / "last_checkpoint").read_text().strip() == panel.weights.name
    panel.back_button.click()
    assert dialog.stack.currentWidget() is dialog.form_page and dialog.resume.isChecked()


def test_dialog_refuses_a_project_without_reviewed_images(qtbot, window, fixtures_dir,
                                                         nuclei_dir, tmp_path):
    project = make_project(tmp_path, nuclei_dir, reviewed=0)
    dialog = open_dialog(window)
    fill(dialog, fixtures_dir, project, tmp_path / "run", 5, 0)
    assert not dialog.start()
    assert "no reviewed images" in dialog.error.text()
    assert dialog.stack.currentWidget() is dialog.form_page
    dialog.config_edit.setText(str(tmp_path / "missing.yaml"))
    assert not dialog.start() and "model config not found" in dialog.error.text()


def test_estimate_before_start(qtbot, window, fixtures_dir, nuclei_dir, tmp_path):
    """Measure times real iterations in a separate process while the window stays usable; the
    estimate follows the iteration count and says when other settings made it stale."""
    from PySide6.QtCore import Qt

    from cellseg.trainer.estimate import format_duration

    project = make_project(tmp_path, nuclei_dir)
    dialog = open_dialog(window)
    fill(dialog, fixtures_dir, project, tmp_path / "run", max_iter=50, eval_period=0)
    dialog.batch.setValue(1)
    row = dialog.estimate
    assert row.label.text().startswith("Not measured yet")
    # a measurement is cancelled at once, and leaves nothing behind
    row.button.click()
    assert row.running() and row.button.text() == "Cancel"
    tmp = Path(row._tmp.name)
    assert (tmp / "train.json").is_file()
    row.button.click()
    assert not row.running() and row.label.text() == "Measurement cancelled."
    assert not tmp.exists() and not (tmp_path / "run").exists()

    t0 = time.perf_counter()
    qtbot.mouseClick(row.button, Qt.MouseButton.LeftButton)
    assert time.perf_counter() - t0 < 5  # the window does not wait for the measurement
    assert row.running() and row.label.text().startswith("measuring")
    qtbot.waitUntil(lambda: not row.running(), timeout=300_000)
    est = row.estimate
    assert est is not None and est.done, row.log
    # two or more iterations timed; the first pays start-up costs, the median of the rest counts
    assert 2 <= len(est.times) <= 5 and all(math.isfinite(t) and t > 0 for t in est.times)
    per = est.seconds_per_iteration
    assert per == pytest.approx(statistics.median(est.times[1:]), abs=1e-3)
    text = row.label.text()
    assert text.startswith("about ") and "per iteration on cpu (measured)" in text
    assert f"~{format_duration(per * 50)} for 50 iterations" in text
    # the iteration count re-multiplies; a cost-relevant setting makes it stale
    dialog.max_iter.setValue(4000)
    assert f"~{format_duration(per * 4000)} for 4000 iterations" in row.label.text()
    assert "Stale" not in row.label.text()
    dialog.batch.setValue(2)
    assert row.label.text().startswith("Stale (settings changed): press Measure again.")
    dialog.batch.setValue(1)
    assert row.label.text().startswith("about ")
    assert not (tmp_path / "run").exists()  # measuring writes nothing into the run folder


HEAVY = ("INPUT.MIN_SIZE_TRAIN (1333,) INPUT.MAX_SIZE_TRAIN 1333 INPUT.CROP.ENABLED False "
         "SOLVER.WARMUP_ITERS 0 SEED 0")
STOP_WITHIN_S = 20


def test_stop_mid_iteration_ends_within_seconds(qtbot, window, fixtures_dir, nuclei_dir,
                                                tmp_path):
    """Stop during a long first iteration (4 tiles upscaled to 1333 px: over 40 s per
    iteration on 2 cores, 90 s or more on a loaded machine): "stopping..." at once, and the
    trainer itself ends within STOP_WITHIN_S, keeping nothing it had not finished."""
    project = make_project(tmp_path, nuclei_dir)
    dialog = open_dialog(window)
    out = tmp_path / "run"
    fill(dialog, fixtures_dir, project, out, max_iter=100, eval_period=0)
    dialog.val_fraction.setValue(0.0)  # no initial evaluation: training starts at once
    dialog.batch.setValue(4)
    dialog.extra.setText(HEAVY)
    dialog.log_period = 1
    panel = dialog.panel
    assert dialog.start()
    qtbot.waitUntil(lambda: "initialising from" in panel.log.toPlainText(), timeout=180_000)
    qtbot.wait(3000)  # well into the first iteration's forward pass
    assert panel.reader.poll() == [] and not panel.reader.rows  # no iteration finished yet
    with qtbot.waitSignal(panel.done, timeout=STOP_WITHIN_S * 1000) as done:
        panel.stop_button.click()
        assert panel.status.text() == "stopping..." and not panel.stop_button.isEnabled()
        assert "stop requested" in panel.log.toPlainText()
    assert done.args == [0] and not panel.ended, panel.log.toPlainText()
    assert not panel.runner.running()
    log = panel.log.toPlainText()
    assert "stopped before iteration 1 finished: nothing new to save" in log
    assert "nothing to resume" in panel.status.text()
    assert panel.weights is None and not panel.load_button.isEnabled()
    assert not list(out.glob("model_*.pth")) and not (out / "last_checkpoint").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP freezes the trainer")
def test_stop_ends_a_trainer_that_does_not_answer(qtbot, window, fixtures_dir, nuclei_dir,
                                                  tmp_path):
    """A trainer that does not react (frozen with SIGSTOP here; stuck or still starting in
    life) is ended after the grace period; its last checkpoint is intact and named."""
    project = make_project(tmp_path, nuclei_dir)
    dialog = open_dialog(window)
    out = tmp_path / "run"
    fill(dialog, fixtures_dir, project, out, max_iter=5000, eval_period=0)
    dialog.checkpoint_period.setValue(1)
    dialog.log_period = 1
    panel = dialog.panel
    panel.stop_grace_s = 3
    assert dialog.start()
    qtbot.waitUntil(lambda: (out / "last_checkpoint").is_file() and len(panel.reader.rows) >= 2,
                    timeout=180_000)
    os.kill(panel.runner.process.processId(), signal.SIGSTOP)
    kept = (out / "last_checkpoint").read_text().strip()
    t0 = time.perf_counter()
    with qtbot.waitSignal(panel.done, timeout=STOP_WITHIN_S * 1000):
        panel.stop_button.click()
        assert panel.status.text() == "stopping..." and not panel.stop_button.isEnabled()
    assert 3 <= time.perf_counter() - t0 < STOP_WITHIN_S
    assert panel.ended and not panel.runner.running()
    log = panel.log.toPlainText()
    assert "the trainer did not stop within 3 s: ending it" in log
    assert f"stopped (ended after 3 s): kept {kept}" in log and "tick Resume" in log
    assert panel.weights == out / kept and panel.load_button.isEnabled()
    ckpt = torch.load(out / kept, weights_only=True)
    assert f"model_{ckpt['iteration']:07d}.pth" == kept and "optimizer" in ckpt
