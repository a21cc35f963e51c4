"""Exchange formats on the real nuclei labels (125 instances), each checked by the other side's
library: roifile reads our ROI sets, shapely our GeoJSON, a cellpose-style _seg.npy comes back as
the same label image, a COCO results file becomes a project's predictions to review."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import roifile
import shapely
import tifffile
from shapely.geometry import shape

from cellseg.core.interop.polygons import trace_mask
from cellseg.core.project import edits as E
from cellseg.core.project.exchange import create_project
from cellseg.core.project.records import Category
from cellseg.core.project.states import Origin, Review
from cellseg.core.project.store import ProjectStore
from cellseg.core.structures import CroppedMasks, Instances

from .test_project_cli import cli


@pytest.fixture(scope="module")
def labels(nuclei_dir) -> np.ndarray:
    return tifffile.imread(nuclei_dir / "mask2d.tif")


@pytest.fixture(scope="module")
def gt_masks(labels) -> tuple[CroppedMasks, np.ndarray]:
    return CroppedMasks.from_label_image(labels)


@pytest.fixture
def make_project(tmp_path, nuclei_dir):
    """Make an empty project (categories nucleus, mitotic) for a folder holding img2d.tif."""
    images = tmp_path / "images"
    images.mkdir()
    (images / "img2d.tif").write_bytes((nuclei_dir / "img2d.tif").read_bytes())
    made = []

    def make() -> Path:
        path = tmp_path / f"project{len(made)}.cellseg"
        create_project(images, path)
        with ProjectStore.open(path) as store:
            store.set_categories([Category(0, 1, "nucleus"), Category(1, 2, "mitotic")])
        made.append(path)
        return path

    return make


@pytest.fixture
def empty_project(make_project) -> Path:
    return make_project()


@pytest.fixture
def project(make_project, gt_masks) -> Path:
    """The 125 nuclei as imported annotations (label values kept), class 'nucleus'."""
    path = make_project()
    masks, ids = gt_masks
    inst = Instances(masks.image_size, masks.tight_boxes(), np.ones(len(masks)),
                     np.zeros(len(masks)), masks)
    with ProjectStore.open(path) as store:
        store.add_instances(store.images()[0].id, inst, Origin.IMPORTED, label_ids=ids)
    return path


def stored_masks(path: Path) -> CroppedMasks:
    with ProjectStore.open(path) as store:
        return store.load(store.images()[0].id).to_instances().masks


# ------------------------------------------------------------------------------ ImageJ
def test_imagej_roi_set_reads_back_in_roifile_and_imports_to_the_same_masks(
        tmp_path, project, empty_project, gt_masks):
    rc, out, err = cli("export", project, "--out", tmp_path / "rois", "--format", "imagej")
    assert rc == 0, err
    assert "125 instances" in out and "lost" not in out
    rois = roifile.roiread(tmp_path / "rois" / "img2d.zip")
    assert len(rois) == 125
    masks, _ = gt_masks
    with ProjectStore.open(project) as store:
        uids = store.load(store.images()[0].id).uids
    for k in (0, 17, 124):
        roi = rois[k]
        assert roi.roitype == roifile.ROI_TYPE.TRACED  # ImageJ's polygon along pixel edges
        assert roi.name == f"nucleus-{uids[k]}"
        ours = trace_mask(masks, k)[0].exterior
        theirs = roi.coordinates()
        assert theirs.shape == ours.shape and np.abs(theirs - ours).max() <= 1
    # back into an empty project: the same 125 masks, classed by the ROI names
    rc, out, err = cli("import", empty_project, tmp_path / "rois" / "img2d.zip")
    assert rc == 0, err
    assert "125 instances into img2d.tif" in out
    assert stored_masks(empty_project) == masks


def test_imagej_export_counts_lost_holes_and_import_skips_lines(tmp_path, empty_project):
    ring = np.zeros((512, 512), bool)
    ring[10:30, 10:30] = True
    ring[15:20, 15:20] = False
    masks = CroppedMasks.from_dense(ring[None])
    with ProjectStore.open(empty_project) as store:
        store.add_instances(store.images()[0].id, Instances(
            (512, 512), masks.tight_boxes(), [1], [0], masks), Origin.DRAWN)
    rc, out, err = cli("export", empty_project, "--out", tmp_path / "rois", "--format", "imagej")
    assert rc == 0, err
    assert "1 instances lost theirs" in out
    line = roifile.ImagejRoi.frompoints([[1, 1], [50, 60]])
    line.roitype = roifile.ROI_TYPE.LINE
    square = roifile.ImagejRoi.frompoints([[100, 100], [110, 100], [110, 110], [100, 110]],
                                          name="0100-0100")
    roifile.roiwrite(tmp_path / "mixed.zip", [line, square])
    rc, out, err = cli("import", empty_project, tmp_path / "mixed.zip", "--category", "mitotic")
    assert rc == 0, err
    assert "1 instances" in out and "1 line ROI" in out
    with ProjectStore.open(empty_project) as store:
        inst = store.load(store.images()[0].id).to_instances()
    assert inst.masks.areas().tolist()[-1] == 100 and inst.classes.tolist()[-1] == 1
    # a single .roi (Fiji's File > Save As > Selection), named for its class
    oval = roifile.ImagejRoi.frompoints([[200, 200], [220, 200], [220, 210], [200, 210]],
                                        name="mitotic-7")
    oval.roitype = roifile.ROI_TYPE.OVAL
    oval.tofile(tmp_path / "img2d.roi")
    rc, out, err = cli("import", empty_project, tmp_path / "img2d.roi")
    assert rc == 0 and "1 instances" in out, err
    with ProjectStore.open(empty_project) as store:
        inst = store.load(store.images()[0].id).to_instances()
    assert inst.classes.tolist()[-1] == 1 and 150 < inst.masks.areas()[-1] < 200


# ------------------------------------------------------------------------------ GeoJSON
def test_geojson_is_valid_with_exact_areas_and_imports_back(tmp_path, project, empty_project,
                                                           gt_masks):
    rc, out, err = cli("export", project, "--out", tmp_path / "gj", "--format", "geojson",
                       "--object-type", "detection")
    assert rc == 0, err
    data = json.loads((tmp_path / "gj" / "img2d.geojson").read_text())
    assert data["type"] == "FeatureCollection" and len(data["features"]) == 125
    masks, _ = gt_masks
    areas = masks.areas()
    for feat, area in zip(data["features"], areas):
        geom = shape(feat["geometry"])
        assert geom.is_valid, shapely.is_valid_reason(geom)
        assert abs(geom.area - area) <= 0.01 * area
        props = feat["properties"]
        assert props["objectType"] == "detection"
        assert props["classification"] == {"name": "nucleus", "color": [31, 119, 180]}
    rc, out, err = cli("import", empty_project, tmp_path / "gj" / "img2d.geojson")
    assert rc == 0, err
    assert stored_masks(empty_project) == masks


def test_geojson_keeps_holes_and_parts_and_repairs_corner_touching_pixels(tmp_path,
                                                                         make_project):
    empty_project = make_project()
    m = np.zeros((3, 512, 512), bool)
    m[0, 10:30, 10:30] = True; m[0, 15:20, 15:20] = False  # a hole
    m[1, 50:60, 50:60] = True; m[1, 70:75, 70:80] = True  # two parts
    m[2, 100:110, 100:110] = True; m[2, 110, 110] = True  # touches at a corner only
    masks = CroppedMasks.from_dense(m)
    with ProjectStore.open(empty_project) as store:
        store.add_instances(store.images()[0].id,
                            Instances((512, 512), masks.tight_boxes(), [1, 1, 1], [0, 1, 0],
                                      masks), Origin.DRAWN)
    assert cli("export", empty_project, "--out", tmp_path / "gj", "--format", "geojson")[0] == 0
    feats = json.loads((tmp_path / "gj" / "img2d.geojson").read_text())["features"]
    geoms = [shape(f["geometry"]) for f in feats]
    assert all(g.is_valid for g in geoms)
    assert [g.geom_type for g in geoms] == ["Polygon", "MultiPolygon", "MultiPolygon"]
    assert len(geoms[0].interiors) == 1 and geoms[0].area == 375
    assert [g.area for g in geoms] == masks.areas().tolist()
    assert feats[1]["properties"]["classification"]["name"] == "mitotic"
    # import into a second project: holes and parts come back pixel for pixel; a class the
    # project lacks becomes a new category
    data = json.loads((tmp_path / "gj" / "img2d.geojson").read_text())
    data["features"][2]["properties"]["classification"]["name"] = "apoptotic"
    (tmp_path / "gj" / "img2d.geojson").write_text(json.dumps(data))
    other = make_project()
    assert cli("import", other, tmp_path / "gj" / "img2d.geojson")[0] == 0
    with ProjectStore.open(other) as store:
        inst = store.load(store.images()[0].id).to_instances()
        names = [c.name for c in store.categories()]
    assert inst.masks == masks
    assert [names[c] for c in inst.classes] == ["nucleus", "mitotic", "apoptotic"]


# ------------------------------------------------------------------------------ cellpose
def cellpose_outlines(masks: np.ndarray) -> np.ndarray:
    """cellpose.utils.masks_to_outlines: each label's outer contour pixels (OpenCV)."""
    out = np.zeros(masks.shape, bool)
    for i in np.unique(masks)[1:]:
        contours = cv2.findContours((masks == i).astype(np.uint8), cv2.RETR_EXTERNAL,
                                    cv2.CHAIN_APPROX_NONE)[-2]
        pts = np.concatenate(contours, axis=0)[:, 0, :]
        out[pts[:, 1], pts[:, 0]] = True
    return out


def write_seg_npy(path: Path, masks: np.ndarray, with_masks: bool = True) -> None:
    """The dict cellpose.io.masks_flows_to_seg saves (cellpose 3), through np.save."""
    outlines = masks * cellpose_outlines(masks)
    h, w = masks.shape
    dat = {"outlines": outlines.astype(np.uint16), "masks": masks.astype(np.uint16),
           "chan_choose": [0, 0], "ismanual": np.zeros(masks.max(), bool),
           "filename": str(path).replace("_seg.npy", ".tif"),
           "flows": [np.zeros((1, h, w, 3), np.uint8), np.zeros((h, w), np.uint8),
                     np.zeros((h, w), np.uint8), [], np.zeros((3, h, w), np.float32)],
           "diameter": np.nan}
    if not with_masks:
        del dat["masks"]
    np.save(path, dat, allow_pickle=True)


@pytest.mark.parametrize("with_masks", [True, False], ids=["masks", "outlines-only"])
def test_cellpose_seg_npy_imports_to_the_same_label_image(tmp_path, empty_project, labels,
                                                          with_masks):
    seg = tmp_path / "img2d_seg.npy"
    write_seg_npy(seg, labels, with_masks)
    rc, out, err = cli("import", empty_project, seg)
    assert rc == 0, err
    assert "125 instances into img2d.tif" in out
    rc, out, err = cli("export", empty_project, "--out", tmp_path / "lab", "--format", "labels")
    assert rc == 0, err
    assert np.array_equal(tifffile.imread(tmp_path / "lab" / "img2d" / "class1.tif"), labels)


def test_cellpose_export_is_a_16_bit_label_image_and_reimports(tmp_path, project, gt_masks,
                                                               make_project):
    rc, out, err = cli("export", project, "--out", tmp_path / "cp", "--format", "cellpose")
    assert rc == 0, err
    png = tmp_path / "cp" / "img2d_cp_masks.png"
    back = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and back.shape == (512, 512) and back.max() == 125
    masks, _ = CroppedMasks.from_label_image(back)
    assert masks == gt_masks[0]
    other = make_project()
    assert cli("import", other, png)[0] == 0
    assert stored_masks(other) == gt_masks[0]


def test_bad_files_fail_in_one_line_and_leave_the_project_unchanged(tmp_path, project, labels):
    evil = tmp_path / "img2d_seg.npy"
    np.save(evil, {"masks": labels, "run": print}, allow_pickle=True)
    notgeo = tmp_path / "img2d.geojson"
    notgeo.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", '
                      '"geometry": {"type": "Polygon", "coordinates": [[1, 2]]}}]')
    broken_zip = tmp_path / "img2d.zip"
    broken_zip.write_bytes(b"PK\x03\x04 not really a zip")
    wrong_size = tmp_path / "img2d_cp_masks.png"
    cv2.imwrite(str(wrong_size), np.ones((100, 100), np.uint16))
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 1, "file_name": "other.tif", "category_id": 1,
                                    "score": 0.9, "bbox": [0, 0, 1, 1],
                                    "segmentation": [[0, 0, 5, 0, 5, 5]]}]))
    before = project.read_bytes()
    cases = [(evil, "cellpose", "refusing to load"), (notgeo, "geojson", "not JSON"),
             (evil, "imagej", "not an ImageJ ROI"),
             (broken_zip, "imagej", "not an ImageJ ROI"),
             (wrong_size, "cellpose", "100x100 image"),
             (results, "coco-results", "'other.tif' is not in the project"),
             (tmp_path / "missing.zip", "imagej", "not found")]
    for path, fmt, message in cases:
        rc, out, err = cli("import", project, path, "--format", fmt)
        assert rc == 2, (path, out)
        assert message in err and len(err.strip().splitlines()) == 1, err
    rc, out, err = cli("import", project, notgeo, "--score-threshold", "0.5")
    assert rc == 2 and "applies to COCO results" in err
    assert project.read_bytes() == before


def test_cellpose_export_says_where_overlaps_went(tmp_path, empty_project):
    m = np.zeros((2, 512, 512), bool)
    m[0, 10:20, 10:20] = True
    m[1, 15:25, 15:25] = True  # 25 pixels shared with the first
    masks = CroppedMasks.from_dense(m)
    with ProjectStore.open(empty_project) as store:
        store.add_instances(store.images()[0].id, Instances(
            (512, 512), masks.tight_boxes(), [1, 1], [0, 0], masks), Origin.DRAWN)
    rc, out, err = cli("export", empty_project, "--out", tmp_path / "cp", "--format", "cellpose")
    assert rc == 0 and "25 overlapping pixels went to the later instance" in out
    back = cv2.imread(str(tmp_path / "cp" / "img2d_cp_masks.png"), cv2.IMREAD_UNCHANGED)
    assert (back == 1).sum() == 75 and (back == 2).sum() == 100


# ------------------------------------------------------------------------------ COCO results
def test_coco_results_import_review_and_export(tmp_path, empty_project, gt_masks):
    masks, _ = gt_masks
    scores = np.linspace(0.05, 1.0, len(masks), dtype=np.float32)
    inst = Instances(masks.image_size, masks.tight_boxes(), scores, np.zeros(len(masks)), masks)
    results = tmp_path / "coco_instances_results.json"  # as cellseg predict writes it
    results.write_text(json.dumps(inst.to_coco_results(7, "/cluster/run/img2d.tif")))
    rc, out, err = cli("import", empty_project, results, "--score-threshold", "0.5")
    assert rc == 0, err
    kept = int((scores >= 0.5).sum())
    assert f"{kept} detections on 1 images" in out and f"{125 - kept} below" in out
    with ProjectStore.open(empty_project) as store:
        image = store.images()[0]
        ann = store.load(image.id)
        assert len(ann) == kept and (ann.origins == Origin.MODEL).all()
        assert np.allclose(np.sort(ann.scores), np.sort(scores[scores >= 0.5]))
        # stored best first (scores rise with the index): exactly the predicted pixels
        assert ann.to_instances().masks == masks[np.flatnonzero(scores >= 0.5)[::-1]]
        # review: reject the lowest-scoring one, accept the best, mark the image reviewed
        low, best = ann.uids[np.argmin(ann.scores)], ann.uids[np.argmax(ann.scores)]
        for edit in (E.set_review(ann, [low], Review.REJECTED),
                     E.set_review(ann, [best], Review.ACCEPTED),
                     E.set_image_reviewed(ann, True)):
            ann.apply(edit)
            store.save_edit(image.id, edit)
    rc, out, err = cli("export", empty_project, "--out", tmp_path / "corrected.json",
                       "--reviewed-only")
    assert rc == 0, err
    exported = json.loads((tmp_path / "corrected.json").read_text())
    assert len(exported["annotations"]) == kept - 1
    assert exported["images"][0]["file_name"] == "img2d.tif"


def test_coco_results_by_image_id_need_known_ids_and_categories(tmp_path, empty_project,
                                                                gt_masks):
    masks, _ = gt_masks
    inst = Instances(masks.image_size, masks.tight_boxes(), np.ones(len(masks)),
                     np.zeros(len(masks)), masks)
    with ProjectStore.open(empty_project) as store:
        image_id = store.images()[0].id
    good = tmp_path / "good.json"
    good.write_text(json.dumps(inst[:3].to_coco_results(image_id)))
    assert cli("import", empty_project, good, "--format", "coco-results")[0] == 0
    before = empty_project.read_bytes()
    bad_cat = [dict(r, category_id=9) for r in inst[:3].to_coco_results(image_id)]
    bad_id = inst[:3].to_coco_results(image_id + 41)
    for data, message in ((bad_cat, "unknown category_id 9"), (bad_id, f"{image_id + 41}")):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(data))
        rc, out, err = cli("import", empty_project, path, "--format", "coco-results")
        assert rc == 2 and message in err, err
    truncated = tmp_path / "cut.json"
    truncated.write_text(good.read_text()[:300])
    rc, out, err = cli("import", empty_project, truncated, "--format", "coco-results")
    assert rc == 2 and "truncated JSON" in err
    assert empty_project.read_bytes() == before


# ------------------------------------------------------------------------------ CVAT
def test_coco_export_imports_in_datumaro_with_every_instance(tmp_path, project, gt_masks):
    dm = pytest.importorskip(
        "datumaro", reason="datumaro is not in the test extra (it pins pillow 12 and "
        "opencv < 5); run benchmarks/check_datumaro.py in its own venv")
    # CVAT's COCO 1.0 layout: annotations/instances_default.json, images/default/
    ann_file = tmp_path / "cvat" / "annotations" / "instances_default.json"
    (tmp_path / "cvat" / "images" / "default").mkdir(parents=True)
    rc, out, err = cli("export", project, "--out", ann_file)
    assert rc == 0, err
    dataset = dm.Dataset.import_from(str(tmp_path / "cvat"), "coco_instances")
    masks = [a for item in dataset for a in item.annotations if a.type.name == "mask"]
    assert len(masks) == 125
    assert sorted(int(a.get_area()) for a in masks) == sorted(gt_masks[0].areas().tolist())
