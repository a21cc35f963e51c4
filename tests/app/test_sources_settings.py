"""Opening folders/files/COCO/research folders, and what persists between sessions."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile

from cellseg.app.settings import AppSettings
from cellseg.core.review.sources import open_source
from cellseg.core.errors import CellsegError, ImageReadError


def test_nuclei_folder_lists_the_image_not_its_mask(nuclei_dir):
    src = open_source(nuclei_dir)
    assert src.kind == "folder"
    assert [e.name for e in src.entries] == ["img2d.tif"]


def test_single_file_and_natural_order(tmp_path, nuclei_dir):
    for name in ("img10.tif", "img2.tif", "img1.tif", "cells_masks.tif", "notes.txt"):
        shutil.copy(nuclei_dir / "img2d.tif", tmp_path / name)
    src = open_source(tmp_path)
    assert [e.name for e in src.entries] == ["img1.tif", "img2.tif", "img10.tif"]
    one = open_source(tmp_path / "img2.tif")
    assert one.kind == "file" and len(one.entries) == 1


def test_research_folder(tmp_path, nuclei_dir):
    image = tifffile.imread(nuclei_dir / "img2d.tif")
    labels = tifffile.imread(nuclei_dir / "mask2d.tif")
    for name in ("sample_b", "sample_a"):
        (tmp_path / name).mkdir()
        tifffile.imwrite(tmp_path / name / "image.tif", image)
        tifffile.imwrite(tmp_path / name / "class1.tif", labels)
    src = open_source(tmp_path)
    assert src.kind == "research"
    assert [e.name for e in src.entries] == ["sample_a", "sample_b"]
    assert src.entries[0].path == tmp_path / "sample_a" / "image.tif"


def test_coco_dataset(tmp_path, nuclei_dir):
    from cellseg.core.coco.dataset import CocoCategory, CocoImage
    from cellseg.core.coco.writer import write_coco
    from cellseg.core.structures import CroppedMasks, Instances

    labels = tifffile.imread(nuclei_dir / "mask2d.tif")
    masks, _ = CroppedMasks.from_label_image(labels)
    inst = Instances(labels.shape, masks.tight_boxes(), np.ones(len(masks)),
                     np.zeros(len(masks)), masks)
    shutil.copy(nuclei_dir / "img2d.tif", tmp_path / "a.tif")
    im = CocoImage(7, "a.tif", 512, 512)
    write_coco(tmp_path / "ann.json", [im], [CocoCategory(1, "nucleus")], {7: inst})
    src = open_source(tmp_path / "ann.json")
    assert src.kind == "coco"
    assert src.class_names == ["nucleus"]
    assert src.entries[0].path == tmp_path / "a.tif" and src.entries[0].image_id == 7


def test_bad_paths_raise_clear_errors(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        open_source(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="no images found"):
        open_source(tmp_path / "empty")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(CellsegError, match="x.txt"):
        open_source(tmp_path / "x.txt")


def test_settings_persist_across_sessions(tmp_path, qtbot, nuclei_dir, cascade_model):
    from cellseg.app.window import MainWindow

    ini = tmp_path / "s.ini"
    first = MainWindow(AppSettings.from_file(ini))
    qtbot.addWidget(first)
    first.show()
    first.resize(720, 520)
    first.move(40, 30)
    assert first.open_path(nuclei_dir)
    first.set_model("cascade", *cascade_model)
    first.set_device("cpu")
    first.close()

    second = MainWindow(AppSettings.from_file(ini))
    qtbot.addWidget(second)
    assert second.settings.recent() == [str(nuclei_dir.resolve())]
    assert second.models_panel.model_paths("cascade") == cascade_model
    assert second.service.has_model("cascade") and not second.service.has_model("pointrend")
    assert second.models_panel.device.currentText() == "cpu"
    assert (second.width(), second.height()) == (720, 520)
    assert [a.text() for a in second.recent_menu.actions()] == [str(nuclei_dir.resolve())]
    second.close()


def test_recent_list_is_bounded_and_most_recent_first(tmp_path):
    s = AppSettings.from_file(tmp_path / "s.ini")
    for i in range(15):
        s.add_recent(tmp_path / f"d{i}")
    s.add_recent(tmp_path / "d3")
    recent = s.recent()
    assert len(recent) == 10 and recent[0].endswith("d3") and recent[1].endswith("d14")
