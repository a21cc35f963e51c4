"""COCO import fuzzed with Hypothesis: a valid file made from the real nuclei labels, mutated the
ways real exports break (wrong types, missing keys, duplicate ids, invalid RLE counts as in
CVAT's issue 9460, RLE sizes that do not match, short polygons, boxes outside the image, unknown
categories, non-UTF-8 text and bytes, cut-off files) and imported into an existing project.

Either the import succeeds and the project still exports a valid COCO file, or it raises
DataError with a one-line message and the project file (and its -wal) is byte-identical."""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import event, given, settings
from hypothesis import strategies as st

from cellseg.core.cli import main
from cellseg.core.coco.dataset import CocoCategory, CocoImage, load_coco
from cellseg.core.coco.writer import write_coco
from cellseg.core.errors import DataError
from cellseg.core.project.exchange import create_project, export_coco, import_coco
from cellseg.core.project.store import ProjectStore
from cellseg.core.structures import CroppedMasks, Instances


@pytest.fixture(scope="module")
def base(tmp_path_factory, nuclei_dir):
    """A folder with the nuclei image and a 160x200 crop of it, their COCO file (40 + crop
    nuclei, two categories, label ids) and a project that already holds that file."""
    root = tmp_path_factory.mktemp("fuzz")
    image = tifffile.imread(nuclei_dir / "img2d.tif")
    labels = tifffile.imread(nuclei_dir / "mask2d.tif")
    tifffile.imwrite(root / "img2d.tif", image)
    tifffile.imwrite(root / "crop.tif", image[:160, :200])
    instances, label_ids = {}, {}
    for image_id, lab, keep in ((1, labels, 40), (2, labels[:160, :200], 12)):
        masks, ids = CroppedMasks.from_label_image(lab)
        masks, ids = masks[np.arange(min(keep, len(ids)))], ids[:keep]
        n = len(ids)
        instances[image_id] = Instances(lab.shape, masks.tight_boxes(), np.ones(n),
                                        np.arange(n) % 2, masks)
        label_ids[image_id] = ids.astype(np.int64)
    coco = write_coco(root / "valid.json",
                      [CocoImage(1, "img2d.tif", 512, 512), CocoImage(2, "crop.tif", 160, 200)],
                      [CocoCategory(1, "nucleus"), CocoCategory(2, "mitotic")], instances,
                      label_ids=label_ids)
    project = root / "pristine.cellseg"
    create_project(root, project, coco)
    return root, json.loads(coco.read_text()), project


# ----------------------------------------------------------------------------- the mutations
JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.sampled_from(["\udc80bad", "nu\x00ll", "naïve", "line\nbreak", "", "1", "[]"]),
    st.lists(st.integers(-5, 2 ** 33), max_size=4), st.just([]), st.just({}),
    st.dictionaries(st.sampled_from(["size", "counts", "x"]), st.integers(0, 600), max_size=2))


def _paths(doc) -> list[tuple]:
    """Every (container, key) pair of the document, nested values included."""
    out = []

    def walk(node):
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            out.append((node, key))
            if isinstance(value, (dict, list)):
                walk(value)

    walk(doc)
    return out


def _anns(doc) -> list[dict]:
    return [a for a in doc.get("annotations", []) if isinstance(a, dict)]


@st.composite
def mutate_value(draw, doc):
    node, key = draw(st.sampled_from(_paths(doc)))
    if isinstance(node, dict) and draw(st.booleans()):
        del node[key]  # a missing key
    else:
        node[key] = draw(JUNK)  # a wrong type or value


@st.composite
def duplicate(draw, doc):
    part = draw(st.sampled_from(["images", "annotations", "categories"]))
    records = doc[part]
    i = draw(st.integers(0, len(records) - 1))
    j = (i + draw(st.integers(1, max(len(records) - 1, 1)))) % len(records)
    field = draw(st.sampled_from({"images": ["id", "file_name"], "annotations": ["id"],
                                  "categories": ["id", "name"]}[part]))
    if field in records[j]:
        records[i][field] = records[j][field]


@st.composite
def break_rle(draw, doc):
    ann = draw(st.sampled_from(_anns(doc)))
    seg = ann["segmentation"]
    counts = seg["counts"]
    how = draw(st.sampled_from(["cut", "char", "list", "swap", "size", "huge"]))
    if how == "cut":  # a CVAT-style export with counts that do not add up
        seg["counts"] = counts[:draw(st.integers(0, max(len(counts) - 1, 0)))]
    elif how == "char":
        pos = draw(st.integers(0, len(counts)))
        seg["counts"] = counts[:pos] + draw(st.characters(max_codepoint=300)) + counts[pos:]
    elif how == "list":
        seg["counts"] = draw(st.lists(st.integers(-3, 600 * 600), max_size=6))
    elif how == "swap":  # another image's mask: wrong size behind the right header
        seg["counts"] = draw(st.sampled_from([a["segmentation"]["counts"] for a in _anns(doc)]))
    elif how == "size":
        h, w = seg["size"]
        seg["size"] = [h + draw(st.integers(-2, 2)), w + draw(st.integers(-2, 2))]
    else:
        seg["counts"] = "0" + "o" * draw(st.integers(1, 20)) + "0"


@st.composite
def break_geometry(draw, doc):
    ann = draw(st.sampled_from(_anns(doc)))
    how = draw(st.sampled_from(["polygon", "bbox", "category", "image", "dims"]))
    if how == "polygon":  # 0-4 points, inside or outside the image
        n = draw(st.integers(0, 4))
        ann["segmentation"] = [draw(st.lists(st.integers(-20, 700), min_size=2 * n,
                                             max_size=2 * n))]
    elif how == "bbox":
        x, y = draw(st.integers(-1000, 1000)), draw(st.integers(-1000, 1000))
        ann["bbox"] = [x, y, draw(st.integers(0, 900)), draw(st.integers(0, 900))]
    elif how == "category":
        ann["category_id"] = draw(st.integers(3, 2 ** 40))
    elif how == "image":
        ann["image_id"] = draw(st.integers(3, 2 ** 40))
    else:
        im = draw(st.sampled_from(doc["images"]))
        im[draw(st.sampled_from(["height", "width"]))] = draw(st.integers(0, 10 ** 6))


@st.composite
def unusual_but_valid(draw, doc):
    ann = draw(st.sampled_from(_anns(doc)))
    how = draw(st.sampled_from(["no bbox", "polygon", "crowd", "float id", "extra", "rename",
                                "new image"]))
    if how == "no bbox":  # boxes are derived from the masks
        ann.pop("bbox", None)
    elif how == "polygon":
        x, y = draw(st.integers(0, 150)), draw(st.integers(0, 150))
        ann["segmentation"] = [[x, y, x + 8, y, x + 4, y + 6]]
    elif how == "crowd":
        ann["iscrowd"] = 1
    elif how == "float id":
        ann["image_id"] = float(ann["image_id"])
    elif how == "extra":
        ann[draw(st.sampled_from(["attributes", "score", "area", "occluded"]))] = draw(JUNK)
    elif how == "rename":
        draw(st.sampled_from(doc["categories"]))["name"] = draw(st.text(min_size=1, max_size=6))
    else:
        draw(st.sampled_from(doc["images"]))["file_name"] = draw(
            st.sampled_from(["new.tif", "sub/ü.png", "Ärger 1.tif", "../crop.tif", "/etc/hosts",
                             "crop.tif", "."]))


@st.composite
def hostile_coco(draw, valid: dict) -> bytes:
    """A valid COCO document with one to three mutations, then maybe damaged as bytes."""
    doc = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from([mutate_value, duplicate, break_rle, break_geometry,
                                     unusual_but_valid, unusual_but_valid]))
        try:
            draw(kind(doc))
        except (KeyError, TypeError, IndexError, AttributeError, ValueError):
            pass  # an earlier mutation removed what this one needs
    data = json.dumps(doc).encode("utf-8")
    how = draw(st.sampled_from(["as is"] * 6 + ["cut", "byte", "latin-1", "BOM"]))
    if how == "cut":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif how == "byte":  # a byte that is not UTF-8
        pos = draw(st.integers(0, len(data)))
        data = data[:pos] + draw(st.sampled_from([b"\xff", b"\xc3", b"\x80"])) + data[pos:]
    elif how == "BOM":  # Windows editors write one; it is still UTF-8
        data = b"\xef\xbb\xbf" + data
    elif how == "latin-1":
        data = json.dumps(dict(doc, info={"description": "Zellkerne für Änne"}),
                          ensure_ascii=False).encode("latin-1", "replace")
    return data


# ----------------------------------------------------------------------------- the property
def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_import_of_a_hostile_coco_file_succeeds_validly_or_changes_nothing(base, data):
    root, valid, pristine = base
    raw = data.draw(hostile_coco(valid), label="COCO bytes")
    # as the app imports (images must be on disk with the stated size) or without images
    images_root = root if data.draw(st.booleans(), label="check images on disk") else None
    bad = root / "hostile.json"
    bad.write_bytes(raw)
    work = root / "work.cellseg"
    for p in (work, Path(f"{work}-wal"), Path(f"{work}-shm")):
        p.unlink(missing_ok=True)
    shutil.copy(pristine, work)
    with ProjectStore.open(work) as store:
        before = digest(work), digest(Path(f"{work}-wal"))
        rows = store._conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
        try:
            summary = import_coco(store, bad, images_root=images_root)
        except DataError as exc:
            message = str(exc)
            assert "\n" not in message and str(bad) in message and len(message) < 400, message
            assert (digest(work), digest(Path(f"{work}-wal"))) == before
            event("refused: " + re.sub(r"-?\d+", "N", message.replace(str(bad), ""))[:70])
            return
        event("accepted")
        # accepted: the project is sound and exports a COCO file that reads back
        assert store.integrity_ok()
        assert store._conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == \
            rows + summary.instances
        out = root / "export.json"
        exported = export_coco(store, out)
        again = load_coco(out)
        assert again.num_instances() == exported.num_instances()
        assert [im.file_name for im in again.images] == [im.file_name for im in exported.images]


# ----------------------------------------------------------------------------- the CLI
def cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def _write(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_cli_project_create_refuses_hostile_coco_with_one_line(base, tmp_path):
    root, valid, _ = base
    cvat = copy.deepcopy(valid)  # CVAT issue 9460: RLE counts that overrun the image
    cvat["annotations"][3]["segmentation"]["counts"] += "PP0"
    surrogate = copy.deepcopy(valid)
    surrogate["categories"][1]["name"] = "\udc80"
    huge_id = copy.deepcopy(valid)
    huge_id["images"][1]["id"] = 2 ** 64
    cases = {
        "annotation id 4 (image id 1): invalid RLE counts": _write(tmp_path / "cvat.json", cvat),
        "field 'name' is not valid Unicode text": _write(tmp_path / "sur.json", surrogate),
        "field 'id' must be a whole number from 0": _write(tmp_path / "id.json", huge_id),
        "not UTF-8 text (byte 0xff": tmp_path / "latin.json",
    }
    (tmp_path / "latin.json").write_bytes(b'{"images": [], "info": "\xff"}')
    for expect, path in cases.items():
        out = tmp_path / "p.cellseg"
        rc, stdout, stderr = cli("project", "create", root, "--out", out, "--import", path)
        assert rc == 2 and stderr.count("\n") == 1, stderr
        assert expect in stderr and str(path) in stderr, stderr
        assert not out.exists()
    # the real command: exit status 2 and exactly one line on stderr, nothing else
    proc = subprocess.run([sys.executable, "-m", "cellseg.core.cli", "project", "create", root,
                           "--out", tmp_path / "x.cellseg", "--import", cases[next(iter(cases))]],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "invalid RLE counts" in proc.stderr and not (tmp_path / "x.cellseg").exists()
