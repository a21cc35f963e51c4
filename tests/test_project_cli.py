"""`cellseg project create` / `cellseg export`: real nuclei labels through COCO, SQLite and back."""
import contextlib
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cellseg.core.cli import main
from cellseg.core.coco.research_folder import seed_to_coco
from cellseg.core.errors import DataError
from cellseg.core.project import edits as E
from cellseg.core.project.exchange import import_coco
from cellseg.core.project.raster import polygon_region
from cellseg.core.project.states import Review
from cellseg.core.project.store import ProjectStore


def cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def seed(tmp_path_factory, nuclei_dir):
    """A research folder (sample/image.tif + class1.tif) and its COCO file (with label ids)."""
    root = tmp_path_factory.mktemp("seed")
    (root / "nuclei").mkdir()
    (root / "nuclei" / "image.tif").write_bytes((nuclei_dir / "img2d.tif").read_bytes())
    (root / "nuclei" / "class1.tif").write_bytes((nuclei_dir / "mask2d.tif").read_bytes())
    seed_to_coco(root, root / "gt.json", class_names=["nucleus"])
    return root


@pytest.fixture
def project(tmp_path, seed):
    path = tmp_path / "nuclei.cellseg"
    rc, out, err = cli("project", "create", seed, "--out", path, "--import", seed / "gt.json")
    assert rc == 0, err
    assert "125 instances" in out
    return path


def test_roundtrip_of_nuclei_labels_is_pixel_identical(tmp_path, project, nuclei_dir):
    rc, out, err = cli("export", project, "--out", tmp_path / "folders", "--format", "label-tiff")
    assert rc == 0, err
    back = tifffile.imread(tmp_path / "folders" / "nuclei" / "class1.tif")
    assert np.array_equal(back, tifffile.imread(nuclei_dir / "mask2d.tif"))


@pytest.mark.parametrize("segmentation", ["rle", "polygon"])
def test_export_import_export_is_byte_identical(tmp_path, project, seed, segmentation):
    first = tmp_path / "first.json"
    assert cli("export", project, "--out", first, "--segmentation", segmentation)[0] == 0
    again = tmp_path / "again.cellseg"
    assert cli("project", "create", seed, "--out", again, "--import", first)[0] == 0
    second = tmp_path / "second.json"
    assert cli("export", again, "--out", second, "--segmentation", segmentation)[0] == 0
    assert first.read_bytes() == second.read_bytes()


def test_export_loads_in_pycocotools_and_scores_ap_100(tmp_path, project):
    # correct a few things first, as a user would
    with ProjectStore.open(project) as store:
        image = store.images()[0]
        ann = store.load(image.id)
        for edit in (E.delete(ann, ann.uids[:3]),
                     E.set_review(ann, ann.uids[3:5], Review.REJECTED),
                     E.draw_instance(ann, polygon_region([(130, 2), (170, 2), (150, 40)],
                                                           ann.image_size), 0)):
            ann.apply(edit)
            store.save_edit(image.id, edit)
    out = tmp_path / "export.json"
    rc, text, err = cli("export", project, "--out", out)
    assert rc == 0, err
    gt = COCO(str(out))
    anns = gt.loadAnns(gt.getAnnIds())
    assert len(anns) == 125 - 3 - 2 + 1
    assert all(a["iscrowd"] == 0 and len(a["bbox"]) == 4 and a["area"] > 0 for a in anns)
    rle = anns[0]["segmentation"]
    assert isinstance(rle["counts"], str) and rle["size"] == [512, 512]
    results = [dict(a, score=1.0) for a in anns]
    ev = COCOeval(gt, gt.loadRes(results), "segm")
    ev.params.maxDets = [1, 10, 1000]  # a microscopy image holds more than COCO's 100 objects
    ev.evaluate(); ev.accumulate()
    precision = ev.eval["precision"][:, :, :, 0, -1]  # all IoUs, recalls, classes; area all
    ap = 100 * precision[precision > -1].mean()
    assert ap == pytest.approx(100.0)
    # reviewed-only: nothing reviewed yet -> no images
    rc, text, err = cli("export", project, "--out", tmp_path / "none.json", "--reviewed-only")
    assert rc == 0 and json.loads((tmp_path / "none.json").read_text())["images"] == []


def test_create_with_models_and_plain_images(tmp_path, nuclei_dir, fixtures_dir):
    m = fixtures_dir / "cascade_gn_dconv"
    path = tmp_path / "p.cellseg"
    rc, out, err = cli("project", "create", nuclei_dir, "--out", path,
                       "--model", m / "config.yaml", m / "model_final.pth")
    assert rc == 0, err
    with ProjectStore.open(path) as store:
        # mask2d.tif is the label image of img2d.tif: a folder scan skips it
        assert [i.file_name for i in store.images()] == ["img2d.tif"]
        assert store.models()[0].weights == str((m / "model_final.pth").resolve())
        assert len(store.categories()) == 4  # the config's NUM_CLASSES
    rc, out, err = cli("project", "info", path)
    assert rc == 0 and "img2d.tif" in out
    rc, out, err = cli("project", "create", nuclei_dir, "--out", tmp_path / "q.cellseg",
                       "--model", m / "config.yaml", tmp_path / "missing.pth")
    assert rc == 2 and "weights not found" in err and not (tmp_path / "q.cellseg").exists()


def _bad_files(tmp_path, seed):
    gt = json.loads((seed / "gt.json").read_text())
    bad = {}
    missing = json.loads(json.dumps(gt)); del missing["annotations"][0]["category_id"]
    bad["category_id"] = missing
    unknown = json.loads(json.dumps(gt)); unknown["annotations"][5]["image_id"] = 999
    bad["999"] = unknown
    wrong = json.loads(json.dumps(gt)); wrong["annotations"][2]["segmentation"]["size"] = [500, 512]
    bad["RLE size"] = wrong
    paths = {}
    for message, data in bad.items():
        p = tmp_path / f"bad_{len(paths)}.json"
        p.write_text(json.dumps(data))
        paths[message] = p
    truncated = tmp_path / "truncated.json"
    truncated.write_text((seed / "gt.json").read_text()[:5000])
    paths["truncated.json"] = truncated
    return paths


def test_bad_coco_files_fail_clearly_and_touch_nothing(tmp_path, project, seed):
    before = project.read_bytes()
    for message, path in _bad_files(tmp_path, seed).items():
        # replacing the existing project with a bad import: exit 2, old project untouched
        rc, out, err = cli("project", "create", seed, "--out", project, "--import", path,
                           "--force")
        assert rc == 2 and message in err and str(path) in err, (message, err)
        assert project.read_bytes() == before
        # importing into the open project (what the app does): DataError, rows unchanged
        with ProjectStore.open(project) as store:
            rows = store._conn.execute("SELECT COUNT(*), SUM(area) FROM instances").fetchone()
            with pytest.raises(DataError, match=message if message != "truncated.json"
                               else "truncated"):
                import_coco(store, path)
            assert store._conn.execute("SELECT COUNT(*), SUM(area) FROM instances"
                                       ).fetchone() == rows
        assert not any(p.name.endswith(".tmp") for p in project.parent.iterdir())
    # a real process exits non-zero too
    proc = subprocess.run([sys.executable, "-m", "cellseg.core.cli", "project", "create", seed,
                           "--out", tmp_path / "x.cellseg", "--import", tmp_path / "truncated.json"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "truncated.json" in proc.stderr
    assert not (tmp_path / "x.cellseg").exists()


def test_import_that_conflicts_with_the_project_changes_nothing(tmp_path, project, seed):
    gt = json.loads((seed / "gt.json").read_text())
    gt["images"][0]["height"] = 256  # same file name, different size than in the project
    for a in gt["annotations"]:
        a["segmentation"] = [[1, 1, 5, 1, 5, 5]]
        a.pop("bbox")
    p = tmp_path / "resized.json"
    p.write_text(json.dumps(gt))
    with ProjectStore.open(project) as store:
        n = store._conn.execute("SELECT COUNT(*) FROM instances").fetchone()
        with pytest.raises(DataError, match="the project has it as 512x512"):
            import_coco(store, p)
        assert store._conn.execute("SELECT COUNT(*) FROM instances").fetchone() == n
