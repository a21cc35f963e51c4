"""File > Import / Export in the real window: a COCO results file made elsewhere becomes the
project's predictions, one is reviewed with the keyboard, and the project is exported."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QInputDialog

from cellseg.core.project.exchange import create_project
from cellseg.core.project.records import Category
from cellseg.core.project.states import Origin, Review
from cellseg.core.project.store import ProjectStore


@pytest.fixture
def project_path(tmp_path, nuclei_dir):
    images = tmp_path / "images"
    images.mkdir()
    (images / "img2d.tif").write_bytes((nuclei_dir / "img2d.tif").read_bytes())
    path = tmp_path / "nuclei.cellseg"
    create_project(images, path)
    with ProjectStore.open(path) as store:
        store.set_categories([Category(0, 1, "nucleus")])
    return path


@pytest.fixture
def app_window(qtbot, window, project_path):

    c = window.editing
    assert c.open_project(project_path)
    qtbot.waitUntil(lambda: c.image_id is not None, timeout=10000)
    return window


def choose_files(monkeypatch, open_path=None, save_path=None, folder=None, threshold=None):
    """Answer the file dialogs (and the threshold prompt) as a user would."""
    if open_path is not None:
        monkeypatch.setattr(QFileDialog, "getOpenFileName",
                            staticmethod(lambda *a, **k: (str(open_path), "")))
    if save_path is not None:
        monkeypatch.setattr(QFileDialog, "getSaveFileName",
                            staticmethod(lambda *a, **k: (str(save_path), "")))
    if folder is not None:
        monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                            staticmethod(lambda *a, **k: str(folder)))
    if threshold is not None:
        monkeypatch.setattr(QInputDialog, "getDouble",
                            staticmethod(lambda *a, **k: (threshold, True)))


def test_menus_list_every_format(app_window):
    import_texts = [a.text() for a in app_window.menus["import"].actions()]
    export_texts = [a.text() for a in app_window.menus["export"].actions()]
    for word in ("COCO results", "ImageJ", "QuPath", "cellpose"):
        assert any(word in t for t in import_texts), word
    for word in ("COCO", "Label TIFFs", "ImageJ", "QuPath", "cellpose"):
        assert any(word in t for t in export_texts), word
    file_menu = app_window.menuBar().actions()[0].menu()
    assert app_window.menus["import"].menuAction() in file_menu.actions()


def test_import_coco_results_review_one_and_export(qtbot, app_window, monkeypatch, tmp_path,
                                                   nuclei_instances):
    window, c = app_window, app_window.editing
    inst = nuclei_instances.replace(classes=np.zeros(len(nuclei_instances), np.int64))
    results = tmp_path / "coco_instances_results.json"  # predicted on a cluster
    results.write_text(json.dumps(inst.to_coco_results(1, "img2d.tif")))
    kept = int((inst.scores >= 0.6).sum())
    choose_files(monkeypatch, open_path=results, threshold=0.6)
    window.registry["import_coco-results"].trigger()
    qtbot.waitUntil(lambda: c.stored and c.ann is not None and len(c.ann) == kept, timeout=10000)
    assert (c.ann.origins == Origin.MODEL).all() and c.ann.scores.min() >= 0.6
    assert len(window.canvas.instances) == kept
    # review with the keyboard: Tab selects the lowest-scoring instance, A accepts it
    window.activateWindow()
    window.canvas.setFocus()
    qtbot.keyClick(window.canvas, Qt.Key.Key_Tab)
    uid = next(iter(c.selected))
    assert c.ann.scores[c.ann.index_of(uid)] == c.ann.scores.min()
    qtbot.keyClick(window.canvas, Qt.Key.Key_A)
    with ProjectStore.open(c.store.path, read_only=True) as again:
        ann = again.load(again.images()[0].id)
        assert ann.reviews[ann.uids == uid].tolist() == [Review.ACCEPTED]
    # export: COCO for CVAT, GeoJSON for QuPath
    choose_files(monkeypatch, save_path=tmp_path / "corrected.json", folder=tmp_path / "qupath")
    window.registry["export_coco"].trigger()
    coco = json.loads((tmp_path / "corrected.json").read_text())
    assert len(coco["annotations"]) == kept
    (tmp_path / "qupath").mkdir()
    window.registry["export_geojson"].trigger()
    features = json.loads((tmp_path / "qupath" / "img2d.geojson").read_text())["features"]
    assert len(features) == kept
    assert not window.last_error


def test_bad_import_shows_one_line_and_changes_nothing(qtbot, app_window, monkeypatch,
                                                       tmp_path):
    window, c = app_window, app_window.editing
    bad = tmp_path / "img2d.geojson"
    bad.write_text('{"type": "FeatureCollection", "features": [')
    before = c.store.path.read_bytes()
    choose_files(monkeypatch, open_path=bad)
    window.registry["import_geojson"].trigger()
    assert "not JSON" in window.last_error and "\n" not in window.last_error
    assert window.banner.isVisible()
    assert c.store.path.read_bytes() == before


def test_import_an_imagej_roi_set_onto_the_shown_image(qtbot, app_window, monkeypatch,
                                                       tmp_path):
    import roifile

    window, c = app_window, app_window.editing
    rois = [roifile.ImagejRoi.frompoints(np.array(pts), name=f"nucleus-{k}")
            for k, pts in enumerate([[[10, 10], [30, 10], [30, 30], [10, 30]],
                                     [[100, 50], [140, 50], [120, 90]]])]
    path = tmp_path / "from_fiji.zip"  # not named like the image: goes to the one on screen
    roifile.roiwrite(path, rois)
    choose_files(monkeypatch, open_path=path)
    window.registry["import_imagej"].trigger()
    qtbot.waitUntil(lambda: c.stored and c.ann is not None and len(c.ann) == 2, timeout=10000)
    assert 400 in c.ann.to_instances().masks.areas().tolist()  # the 20x20 square
    assert (c.ann.origins == Origin.IMPORTED).all()
    assert len(window.canvas.instances) == 2 and not window.last_error
