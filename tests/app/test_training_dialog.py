"""Train > Fine-tune... in the real window: a short training on a real project of reviewed
nuclei tiles, started from the dialog, followed live, offered for loading at the end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile

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
    from cellseg.app.training import install_training

    action = install_training(window)
    train_menu = next(a.menu() for a in window.menuBar().actions()
                      if a.text().replace("&", "") == "Train")
    assert action in train_menu.actions()
    assert [a.text() for a in train_menu.actions()].count("&Fine-tune...") == 1
    action.trigger()
    dialog = window.training_dialog
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
    assert "stopped at iteration" in panel.log.toPlainText()
    assert panel.weights is not None and panel.weights.name.startswith("model_")
    assert panel.weights.name != "model_final.pth" and panel.load_button.isEnabled()


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
