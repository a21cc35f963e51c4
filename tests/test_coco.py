import json

import numpy as np
import pytest
import tifffile
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from cellseg.core.coco.dataset import CocoCategory, CocoImage, load_coco
from cellseg.core.coco.results import coco_results, load_coco_results, write_coco_results
from cellseg.core.coco.writer import write_coco
from cellseg.core.errors import DataError
from cellseg.core.structures import CroppedMasks, Instances


@pytest.fixture(scope="module")
def nuclei(nuclei_dir):
    labels = tifffile.imread(nuclei_dir / "mask2d.tif")
    masks, ids = CroppedMasks.from_label_image(labels)
    n = len(masks)
    # two "classes" so class <-> category mapping is exercised; category ids not 1-based
    classes = (np.arange(n) % 2).astype(np.int64)
    inst = Instances(labels.shape, masks.tight_boxes(), np.ones(n), classes, masks)
    images = [CocoImage(7, "img2d.tif", *labels.shape)]
    cats = [CocoCategory(30, "big"), CocoCategory(12, "small")]  # unsorted on purpose
    return labels, inst, images, cats, ids


@pytest.mark.parametrize("segmentation", ["rle", "polygon"])
def test_export_import_export_is_byte_identical(tmp_path, nuclei, segmentation):
    labels, inst, images, cats, ids = nuclei
    a = write_coco(tmp_path / "a.json", images, cats, {7: inst}, segmentation,
                   label_ids={7: ids})
    ds = load_coco(a)
    assert ds.class_names == ["small", "big"]  # sorted by id: class k = k-th category by id
    got = ds.instances[7]
    assert got.masks == inst.masks  # the nuclei have no holes: polygons are lossless too
    assert np.array_equal(got.boxes, inst.boxes)
    # class 0 of our Instances is category id 12 ("small")
    assert np.array_equal(got.classes, inst.classes)
    assert np.array_equal(ds.label_ids[7], ids)
    b = write_coco(tmp_path / "b.json", ds.images, ds.categories, ds.instances, segmentation,
                   label_ids=ds.label_ids)
    assert a.read_bytes() == b.read_bytes()


def test_pycocotools_reads_our_file(tmp_path, nuclei):
    labels, inst, images, cats, ids = nuclei
    path = write_coco(tmp_path / "gt.json", images, cats, [inst])
    coco = COCO(str(path))
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[7]))
    assert len(anns) == len(inst) == 125
    assert [a["id"] for a in anns] == list(range(1, 126))
    dense = inst.masks.to_dense()
    for k in (0, 50, 124):
        assert np.array_equal(coco.annToMask(anns[k]).astype(bool), dense[k])
        x, y, w, h = anns[k]["bbox"]
        assert [x, y, x + w, y + h] == inst.boxes[k].tolist()
        assert anns[k]["area"] == dense[k].sum() and anns[k]["iscrowd"] == 0
    assert {a["category_id"] for a in anns} == {12, 30}


def test_polygons_fill_holes_but_keep_outline(tmp_path):
    mask = np.zeros((1, 20, 20), bool)
    mask[0, 2:12, 3:15] = True
    mask[0, 5:8, 6:9] = False  # a hole
    mask[0, 14:17, 14:19] = True  # second component
    inst = Instances((20, 20), [[3, 2, 19, 17]], [1], [0], CroppedMasks.from_dense(mask))
    path = write_coco(tmp_path / "p.json", [CocoImage(1, "x.png", 20, 20)], ["cell"], [inst],
                      segmentation="polygon")
    seg = json.loads(path.read_text())["annotations"][0]["segmentation"]
    assert len(seg) == 2
    back = load_coco(path).instances[1].masks.to_dense()[0]
    filled = mask[0].copy()
    filled[5:8, 6:9] = True
    assert np.array_equal(back, filled)


def _gt(tmp_path, mutate):
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 10, "width": 12}],
        "categories": [{"id": 1, "name": "cell"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 3],
                         "iscrowd": 0, "area": 9,
                         "segmentation": [[1, 1, 4, 1, 4, 4, 1, 4]]}],
    }
    mutate(data)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return path


def test_valid_small_file_loads(tmp_path):
    ds = load_coco(_gt(tmp_path, lambda d: None))
    inst = ds.instances[1]
    assert inst.masks.to_dense()[0].sum() == 9
    assert inst.boxes.tolist() == [[1, 1, 4, 4]]


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("annotations"), "missing required key 'annotations'"),
    (lambda d: d["images"][0].pop("height"), "missing required field 'height'"),
    (lambda d: d["annotations"][0].pop("category_id"), "missing required field 'category_id'"),
    (lambda d: d["annotations"][0].update(image_id=5), "unknown image_id 5"),
    (lambda d: d["annotations"][0].update(category_id=9), "unknown category_id 9"),
    (lambda d: d["annotations"][0].update(
        segmentation={"size": [10, 13], "counts": "PP0"}), "RLE size [10, 13] differs"),
    (lambda d: d["annotations"][0].update(segmentation=[[1, 1, 40, 1, 4, 4]]),
     "polygon lies outside the 12x10 image"),
    (lambda d: d["annotations"][0].update(segmentation=[[1, 1, 4]]), "at least 3 x,y pairs"),
    (lambda d: d["annotations"][0].update(bbox=[1, 1, -3, 3]), "negative size"),
    (lambda d: d["annotations"].append(dict(d["annotations"][0])), "duplicate annotation id"),
    # hostile values: wrong types, out-of-range numbers, text SQLite cannot hold
    (lambda d: d["images"][0].update(id=[1]), "field 'id' must be a whole number"),
    (lambda d: d["images"][0].update(id=2 ** 63), "field 'id' must be a whole number"),
    (lambda d: d["images"][0].update(height=float("nan")), "field 'height' must be a whole"),
    (lambda d: d["images"][0].update(width=True), "field 'width' must be a whole number"),
    (lambda d: d["images"][0].update(height=100_000, width=100_000),
     "10,000,000,000 pixels is above the limit"),
    (lambda d: d["images"][0].update(file_name=7), "field 'file_name' must be a string"),
    (lambda d: d["images"][0].update(file_name="a\nb.png"), "contains a control character"),
    (lambda d: d["categories"][0].update(name="\udc80"), "'name' is not valid Unicode text"),
    (lambda d: d["categories"][0].update(name=None), "field 'name' must be a string"),
    (lambda d: d["annotations"][0].update(image_id="1"), "field 'image_id' must be a whole"),
    (lambda d: d["annotations"][0].update(iscrowd="no"), "field 'iscrowd' must be 0 or 1"),
    (lambda d: d["annotations"][0].update(label_id=2 ** 40), "field 'label_id' must be"),
    (lambda d: d["annotations"][0].update(bbox=[100, 1, 3, 3]), "lies outside the 12x10 image"),
    (lambda d: d["annotations"][0].update(bbox=[1, 1, float("inf"), 3]), "bbox must be"),
    (lambda d: d["annotations"][0].update(segmentation=[[1, 1, 4, 1]]), "at least 3 x,y pairs"),
    (lambda d: d["annotations"][0].update(segmentation={"size": 10, "counts": "PP0"}),
     "RLE size 10 differs"),
    (lambda d: d["annotations"][0].update(segmentation={"size": [10, 12], "counts": "0~0"}),
     "outside the COCO RLE alphabet"),
    (lambda d: d["annotations"][0].update(segmentation={"size": [10, 12], "counts": "0ooooooo0"}),
     "run length too large"),
    (lambda d: d["annotations"][0].update(segmentation={"size": [10, 12], "counts": "0o"}),
     "RLE counts string is truncated"),
    (lambda d: d["annotations"][0].update(segmentation={"size": [10, 12], "counts": "52"}),
     "invalid RLE counts"),  # runs of 5 and 2 pixels: not 10x12 = 120
    (lambda d: d["annotations"][0].update(segmentation={"size": [10, 12], "counts": [100, 30]}),
     "counts sum to 130, not height x width = 10\\*12 = 120"),
    (lambda d: d["annotations"][0].update(segmentation={"size": [10, 12], "counts": [True]}),
     "must be non-negative integers"),
])
def test_invalid_files_raise_data_error_naming_the_problem(tmp_path, mutate, message):
    path = _gt(tmp_path, mutate)
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        load_coco(path)
    assert str(path) in str(err.value)


def test_text_encodings_and_pathological_json(tmp_path):
    path = _gt(tmp_path, lambda d: d["categories"][0].update(name="Zellkern ß"))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # a BOM: still UTF-8, accepted
    assert load_coco(path).class_names == ["Zellkern ß"]
    data = json.loads(path.read_bytes()[3:])
    path.write_bytes(json.dumps(data, ensure_ascii=False).encode("latin-1"))  # an old editor
    with pytest.raises(DataError, match="not UTF-8 text \\(byte 0xdf"):
        load_coco(path)
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="nested too deeply"):
        load_coco(path)
    path.write_text('{"images": [{"id": ' + "9" * 5000 + "}]}")
    with pytest.raises(DataError, match="invalid JSON"):
        load_coco(path)


def test_truncated_and_missing_files(tmp_path):
    path = _gt(tmp_path, lambda d: None)
    path.write_text(path.read_text()[:-40])
    with pytest.raises(DataError, match="truncated JSON"):
        load_coco(path)
    path.write_text('{"images": [,]}')
    with pytest.raises(DataError, match="invalid JSON at line 1"):
        load_coco(path)
    with pytest.raises(DataError, match="not found"):
        load_coco(tmp_path / "nope.json")


def test_results_round_trip_and_validation(tmp_path, nuclei):
    labels, inst, images, cats, ids = nuclei
    gt = load_coco(write_coco(tmp_path / "gt.json", images, cats, [inst]))
    scored = inst.replace(scores=np.linspace(1, 0.1, len(inst)).astype(np.float32))
    res = write_coco_results(tmp_path / "res.json", gt.categories, {7: scored})
    back = load_coco_results(res, gt)[7]
    assert np.array_equal(back.scores, scored.scores)  # already sorted by score
    assert back.masks == scored.masks and np.array_equal(back.classes, scored.classes)
    records = coco_results(gt.categories, {7: scored})
    assert {r["category_id"] for r in records} == {12, 30}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([dict(records[0], image_id=99)]))
    with pytest.raises(DataError, match="unknown image_id 99"):
        load_coco_results(bad, gt)
    rle = mask_util.encode(np.asfortranarray(np.ones((5, 5), np.uint8)))
    bad.write_text(json.dumps([dict(records[0], segmentation={
        "size": [5, 5], "counts": rle["counts"].decode()})]))
    with pytest.raises(DataError, match="RLE size"):
        load_coco_results(bad, gt)
