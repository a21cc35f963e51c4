import json
import shutil

import numpy as np
import pytest
import tifffile

from cellseg.core.cli import main as cli
from cellseg.core.coco.dataset import load_coco
from cellseg.core.evaluation import evaluate


@pytest.fixture
def seed(nuclei_dir, tmp_path):
    """Two samples: the real nuclei (class1 = mask2d.tif) and a crop of them with two classes."""
    root = tmp_path / "seed"
    a = root / "nuclei"
    a.mkdir(parents=True)
    shutil.copy(nuclei_dir / "img2d.tif", a / "image.tif")
    shutil.copy(nuclei_dir / "mask2d.tif", a / "class1.tif")
    image = tifffile.imread(nuclei_dir / "img2d.tif")
    labels = tifffile.imread(nuclei_dir / "mask2d.tif")
    b = root / "crop"
    b.mkdir()
    tifffile.imwrite(b / "image.tif", image[:200, :300])
    crop = labels[:200, :300]
    small = np.isin(crop, np.unique(crop)[1::2])  # every other nucleus is "class 2"
    tifffile.imwrite(b / "class1.tif", np.where(small, 0, crop).astype(np.uint16))
    tifffile.imwrite(b / "class2.tif", np.where(small, crop + 1000, 0).astype(np.uint16))
    return root


def test_round_trip_is_pixel_identical(seed, tmp_path, nuclei_dir, capsys):
    out = tmp_path / "coco.json"
    assert cli(["convert", str(seed), str(out), "--class-names", "nucleus,other"]) == 0
    assert "nucleus, other" in capsys.readouterr().out
    ds = load_coco(out)
    assert [im.file_name for im in ds.images] == ["crop/image.tif", "nuclei/image.tif"]
    assert len(ds.instances[2]) == 125
    back = tmp_path / "back"
    assert cli(["convert", str(out), str(back), "--images-root", str(seed)]) == 0
    for sample in ("nuclei", "crop"):
        for name in ("class1.tif", "class2.tif", "image.tif"):
            src = seed / sample / name
            got = tifffile.imread(back / sample / name)
            if src.exists():
                want = tifffile.imread(src)
                assert got.dtype == want.dtype and np.array_equal(got, want), (sample, name)
            else:  # the nuclei sample has no class2.tif: written empty
                assert not got.any()
    mask2d = tifffile.imread(nuclei_dir / "mask2d.tif")
    assert np.array_equal(tifffile.imread(back / "nuclei" / "class1.tif"), mask2d)
    # and COCO -> folders -> COCO writes the same file again
    again = tmp_path / "again.json"
    assert cli(["convert", str(back), str(again), "--class-names", "nucleus,other"]) == 0
    assert again.read_bytes() == out.read_bytes()


def test_converted_ground_truth_evaluates_to_100(seed, tmp_path):
    out = tmp_path / "coco.json"
    assert cli(["convert", str(seed), str(out)]) == 0
    result = evaluate(out, out)
    assert result.metrics["bbox"]["AP"] == 100.0 and result.metrics["segm"]["AP"] == 100.0
    assert set(result.metrics["segm"]["per_class"]) == {"class1", "class2"}


def test_polygon_coco_converts_back_to_the_same_labels(seed, tmp_path, nuclei_dir, capsys):
    out = tmp_path / "poly.json"
    assert cli(["convert", str(seed), str(out), "--segmentation", "polygon"]) == 0
    first = json.loads(out.read_text())["annotations"][0]["segmentation"]
    assert isinstance(first, list) and len(first[0]) >= 6
    back = tmp_path / "back"
    assert cli(["convert", str(out), str(back)]) == 0
    assert "images not found" in capsys.readouterr().out  # the JSON is not beside them
    assert np.array_equal(tifffile.imread(back / "nuclei" / "class1.tif"),
                          tifffile.imread(nuclei_dir / "mask2d.tif"))


def test_bad_inputs_are_user_errors(seed, tmp_path, capsys):
    tifffile.imwrite(seed / "crop" / "class3.tif", np.zeros((10, 10), np.uint16))
    assert cli(["convert", str(seed), str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "class3.tif" in err and "differs from the image" in err
    assert cli(["convert", str(seed), str(tmp_path / "x.txt")]) == 2
    assert "must be a .json file" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(["convert", str(empty), str(tmp_path / "x.json")]) == 2
    assert "no sample folders" in capsys.readouterr().err
    assert cli(["convert", str(tmp_path / "nope.json"), str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
