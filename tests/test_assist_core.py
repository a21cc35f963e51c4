"""Issue 15's Qt-free parts on the real nuclei labels: edits adding model-made instances, the
ASSISTED origin in the project file, and missed-cell candidates."""
import numpy as np
import pytest
import tifffile

from cellseg.core.postprocess.candidates import candidate_pool, occupancy, uncovered
from cellseg.core.postprocess.pipeline import Settings
from cellseg.core.project import edits as E
from cellseg.core.project.annotations import ImageAnnotations
from cellseg.core.project.states import Origin, Region, Review
from cellseg.core.project.status import image_statuses
from cellseg.core.project.store import ProjectStore
from cellseg.core.structures import CroppedMasks, Instances


@pytest.fixture(scope="module")
def labels(nuclei_dir):
    return tifffile.imread(nuclei_dir / "mask2d.tif")


@pytest.fixture
def ann(labels):
    masks, ids = CroppedMasks.from_label_image(labels)
    n = len(ids)
    inst = Instances(labels.shape, masks.tight_boxes(), np.linspace(0.3, 0.99, n, dtype=np.float32),
                     np.zeros(n, np.int64), masks)
    return ImageAnnotations.from_instances(inst, uids=ids.astype(np.int64))


def box_region(window, size) -> Region:
    x0, y0, x1, y1 = window
    return Region(window, np.ones((y1 - y0, x1 - x0), bool))


def test_add_instances_takes_pixels_from_every_instance_both_touch(ann):
    # two new masks over the same existing nucleus: it loses both parts. Fails with the
    # former _take_from_others, which started each subtraction from the stored state, so the
    # second new mask gave back the pixels the first had taken.
    uid = int(ann.uids[40])
    x0, y0, x1, y1 = ann.state(uid).window
    mid = (x0 + x1) // 2
    a = box_region((x0, y0, mid, y0 + 3), ann.image_size)
    b = box_region((mid, y1 - 3, x1, y1), ann.image_size)
    edit = E.add_instances(ann, [a, b], [0, 0], [0.4, 0.3])
    new = [u for u, s in edit.before.items() if s is None]
    assert len(new) == 2 and edit.label == "Add instance x2"
    left = np.zeros(ann.image_size, bool)
    w = edit.after[uid].window
    left[w[1]:w[3], w[0]:w[2]] = edit.after[uid].crop
    assert not left[y0:y0 + 3, x0:mid].any() and not left[y1 - 3:y1, mid:x1].any()
    assert left.sum() < ann.state(uid).area
    for u in new:
        s = edit.after[u]
        assert s.origin == Origin.ASSISTED and s.review == Review.ACCEPTED
    ann.apply(edit)
    dense = ann.masks.to_dense()
    assert dense.sum(0).max() == 1  # no pixel shared


def test_add_instances_later_mask_wins_over_earlier_one_of_the_same_edit(ann):
    w = (5, 5, 15, 15)
    a = box_region(w, ann.image_size)
    b = box_region((10, 5, 20, 15), ann.image_size)
    edit = E.add_instances(ann, [a, b], [0, 1], [0.2, 0.1], allow_overlap=False)
    first, second = [edit.after[u] for u, s in edit.before.items() if s is None][-2:]
    assert first.window[2] == 10 and second.window == (10, 5, 20, 15)
    both = E.add_instances(ann, [a, b], [0, 1], [0.2, 0.1], allow_overlap=True)
    assert sorted(s.area for s in both.after.values() if s is not None)[-2:] == [100, 100]
    # a mask covered entirely by a later one is not added
    gone = E.add_instances(ann, [a, box_region((0, 0, 20, 20), ann.image_size)], [0, 0], [1, 1])
    assert sum(s is not None for u, s in gone.after.items() if gone.before.get(u) is None) == 1


def test_replace_mask_keeps_identity_and_takes_from_neighbours(ann):
    uid = int(ann.uids[10])
    s = ann.state(uid)
    x0, y0, x1, y1 = s.window
    grown = box_region((x0 - 3, y0 - 3, x1 + 3, y1 + 3), ann.image_size)
    edit = E.replace_mask(ann, uid, grown, label="Refine")
    after = edit.after[uid]
    assert after.uid == uid and after.class_id == s.class_id and after.score == s.score
    assert after.origin == Origin.EDITED and after.window == (x0 - 3, y0 - 3, x1 + 3, y1 + 3)


def test_assisted_origin_is_stored_counted_and_read_back(tmp_path, nuclei_dir, ann):
    images = tmp_path / "images"
    images.mkdir()
    (images / "img2d.tif").write_bytes((nuclei_dir / "img2d.tif").read_bytes())
    from cellseg.core.project.exchange import create_project, export_coco

    create_project(images, tmp_path / "p.cellseg")
    with ProjectStore.open(tmp_path / "p.cellseg") as store:
        image_id = store.image_by_name("img2d.tif").id
        store.add_instances(image_id, ann.to_instances(), Origin.MODEL)
        loaded = store.load(image_id)
        edit = E.add_instances(loaded, [box_region((0, 0, 6, 6), loaded.image_size)], [0], [1.0])
        store.save_edit(image_id, edit)
        again = store.load(image_id)
        assert again.counts()["assisted"] == 1
        assert store.counts(image_id).assisted == 1
        assert image_statuses(store)["img2d.tif"].status == "edited"
        ds = export_coco(store, tmp_path / "out.json")
    assert sum(len(v) for v in ds.instances.values()) == len(ann) + 1


def test_candidates_are_the_composed_detections_below_the_threshold_off_existing_cells(ann):
    inst = ann.to_instances()
    raw = {"cascade": inst}
    settings = Settings(score_threshold=0.6)
    pool = candidate_pool(raw, settings, low=0.4)
    assert ((pool.scores >= 0.4) & (pool.scores < 0.6)).all()
    want = np.flatnonzero((inst.scores >= 0.4) & (inst.scores < 0.6))
    assert len(pool) == len(want) and np.all(np.diff(pool.scores) <= 0)
    # none of them lies on the shown ones (the nuclei do not overlap) ...
    shown = inst[np.flatnonzero(inst.scores >= 0.6)]
    keep = uncovered(pool, occupancy(shown.masks, inst.image_size))
    assert len(keep) == len(pool)
    # ... but once accepted (or anything covering them) they are no candidates
    keep = uncovered(pool, occupancy(inst.masks, inst.image_size))
    assert len(keep) == 0
    half = occupancy(pool.masks[:1], inst.image_size)
    ys, xs = np.nonzero(half)
    half[ys[: len(ys) // 5], xs[: len(xs) // 5]] = False  # 80 % of it covered: still covered
    assert 0 not in uncovered(pool, half)
