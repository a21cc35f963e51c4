"""First-run guidance, tooltips and drag-and-drop on the real window, with real fixture models,
real files and real Qt drag/drop events."""
from __future__ import annotations

import shutil
import pytest
import tifffile
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QCheckBox

from cellseg.app.first_run import TOOLTIPS, plan_drop


@pytest.fixture
def win(window):
    return window


def drop(widget, paths) -> bool:
    """Drag local files over ``widget`` and drop them, as a file manager does."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    at = widget.rect().center()
    enter = QDragEnterEvent(QPoint(at), Qt.DropAction.CopyAction, mime,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    if not enter.isAccepted():
        return False
    event = QDropEvent(QPointF(at), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, event)
    return event.isAccepted()


def test_guidance_shown_until_a_model_is_set(win, settings, fast_cascade):
    g = win.first_run.guidance
    assert g.isVisible()
    text = g.label.text()
    for needle in ("Open sample", "config.yaml", "model_final.pth", "drag both files",
                   "Model &gt; Set Cascade model"):
        assert needle in text
    assert g.parent() is win.models_panel
    win.set_model("cascade", *fast_cascade)  # as Model > Set Cascade model… does
    assert not g.isVisible()
    assert settings.model_paths("cascade") == fast_cascade
    win.models_panel.set_model_paths("cascade", "", "", emit=False)
    assert g.isVisible()


def test_guidance_hidden_when_settings_already_hold_a_model(qtbot, settings, fast_cascade):
    from cellseg.app.window import MainWindow

    settings.set_model_paths("cascade", *fast_cascade)
    w = MainWindow(settings)
    qtbot.addWidget(w)
    w.show()
    assert not w.first_run.guidance.isVisible()
    w.close()


def test_every_toggle_has_a_tooltip(win):
    for (panel, name) in TOOLTIPS:
        assert getattr(getattr(win, panel), name).toolTip(), (panel, name)
    for panel in (win.post_panel, win.display_panel):
        for box in panel.findChildren(QCheckBox):
            assert len(box.toolTip()) > 20, box.text()
    assert "10-20x slower" in win.post_panel.tta.toolTip()
    assert "instant" in win.post_panel.soft_nms.toolTip().lower()


def test_drop_config_then_checkpoint_then_image_gives_predictions(win, qtbot, settings,
                                                                  fast_pointrend, crop_folder):
    config, weights = fast_pointrend  # the config lies alone in its folder: needs its checkpoint
    canvas = win.canvas.viewport()
    assert drop(canvas, [config])
    assert win.models_panel.model_paths("pointrend") == ("", "")
    assert "now drop its checkpoint" in win.statusBar().currentMessage()
    assert win.first_run.guidance.isVisible()

    assert drop(canvas, [weights])
    assert win.models_panel.model_paths("pointrend") == (config, weights)
    assert settings.model_paths("pointrend") == (config, weights)  # kept, as a user choice
    assert win.post_panel.model_choice() == "pointrend"  # the only model there is
    assert not win.first_run.guidance.isVisible()

    image = crop_folder / "crop_b.tif"
    with qtbot.waitSignal(win.instances_changed, timeout=120_000,
                          check_params_cb=lambda inst: inst is not None):
        assert drop(canvas, [image])
    assert win.source.entries[0].path == image
    shown = win.current_instances()
    assert shown.image_size == tifffile.imread(image).shape[:2]
    assert len(shown) > 0


def test_drop_both_files_at_once_onto_a_panel_field(win, fast_cascade, cascade_model):
    # onto the Config line edit of the other slot: the window takes it, no URL text is pasted
    field = win.models_panel.rows["pointrend"][0].edit
    assert drop(field, [fast_cascade[0], cascade_model[1]])
    assert win.models_panel.model_paths("cascade") == (fast_cascade[0], cascade_model[1])
    assert field.text() == ""


def test_drop_config_next_to_its_checkpoint(win, fixtures_dir):
    d = fixtures_dir / "mask_rcnn"  # holds model_final.pth and model_final.pkl: .pth is taken
    assert drop(win.image_list, [d / "config.yaml"])
    assert win.models_panel.model_paths("cascade") == (str(d / "config.yaml"),
                                                        str(d / "model_final.pth"))


def test_drop_bad_config_and_unknown_file_show_errors(win, tmp_path, cascade_model):
    bad = tmp_path / "bad" / "config.yaml"
    bad.parent.mkdir()
    bad.write_text("MODEL:\n  NO_SUCH_KEY: 1\n")
    shutil.copy(cascade_model[1], bad.parent / "model_final.pth")
    assert drop(win.canvas.viewport(), [bad])
    assert "NO_SUCH_KEY" in win.banner.text()
    assert win.models_panel.model_paths("cascade") == ("", "")
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    assert drop(win.canvas.viewport(), [notes])
    assert win.banner.text().startswith("nothing to open in the dropped files")


def test_plan_drop(tmp_path, crop_folder, fixtures_dir):
    images = sorted(crop_folder.glob("*.tif"))
    assert plan_drop(images).open == str(crop_folder)  # several images of one folder
    assert plan_drop([crop_folder]).open == str(crop_folder)
    assert plan_drop([images[0]]).open == str(images[0])
    cfg = fixtures_dir / "pointrend" / "config.yaml"
    w = fixtures_dir / "cascade_gn_dconv" / "model_final.pth"
    plan = plan_drop([cfg, w])
    assert plan.models == [(str(cfg), str(w))] and plan.open is None
    lone = tmp_path / "x.pth"
    lone.write_bytes(b"")
    plan = plan_drop([lone])
    assert plan.lone_weights == [str(lone)] and not plan.models
    # an earlier lone config wins over the config.yaml lying next to the checkpoint
    other = tmp_path / "other.yaml"
    other.write_text("")
    plan = plan_drop([cfg.parent / "model_final.pth"], pending_config=str(other))
    assert plan.models == [(str(other), str(cfg.parent / "model_final.pth"))]
    assert plan_drop([cfg.parent / "model_final.pth"]).models == [
        (str(cfg), str(cfg.parent / "model_final.pth"))]
