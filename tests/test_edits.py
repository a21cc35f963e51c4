"""The core editing model: every operation applied, undone and redone on the real nuclei labels."""
import numpy as np
import pytest
import tifffile
from pycocotools import mask as mask_util

from cellseg.core.project import edits as E
from cellseg.core.project.annotations import ImageAnnotations
from cellseg.core.project.raster import brush_region, polygon_region
from cellseg.core.project.rle import decode_rle_strings
from cellseg.core.project.states import Edit, EditError, Origin, Region, Review
from cellseg.core.project.strokes import Stroke
from cellseg.core.structures import CroppedMasks, Instances


@pytest.fixture(scope="module")
def labels(nuclei_dir):
    return tifffile.imread(nuclei_dir / "mask2d.tif")


@pytest.fixture
def ann(labels):
    masks, ids = CroppedMasks.from_label_image(labels)
    n = len(ids)
    scores = np.linspace(0.3, 0.99, n).astype(np.float32)
    inst = Instances(labels.shape, masks.tight_boxes(), scores, np.arange(n) % 2, masks)
    return ImageAnnotations.from_instances(inst, uids=ids.astype(np.int64) * 10)


def dense_of(a: ImageAnnotations) -> np.ndarray:
    return a.masks.to_dense()


def check_roundtrip(a: ImageAnnotations, edit: Edit):
    """apply -> undo is pixel-identical to before; redo is pixel-identical to after."""
    before = a.copy()
    dense_before = dense_of(a)
    a.apply(edit)
    after = a.copy()
    dense_after = dense_of(a)
    a.undo(edit)
    assert a.same_as(before)
    assert np.array_equal(dense_of(a), dense_before)
    a.apply(edit)
    assert a.same_as(after)
    assert np.array_equal(dense_of(a), dense_after)
    return before, after


def test_rle_decoder_matches_pycocotools(labels):
    masks, _ = CroppedMasks.from_label_image(labels)
    rles = masks.to_rle()
    ours = decode_rle_strings([r["counts"] for r in rles], labels.shape)
    ref = mask_util.decode([{"size": r["size"], "counts": r["counts"].encode()} for r in rles])
    assert np.array_equal(ours.to_dense(), np.moveaxis(ref, 2, 0).astype(bool))
    # a full-image mask, an empty mask and a single last pixel: runs at both ends
    edge = np.zeros((3, 7, 5), bool)
    edge[0] = True
    edge[2, 6, 4] = True
    got = decode_rle_strings([r["counts"] for r in CroppedMasks.from_dense(edge).to_rle()], (7, 5))
    assert np.array_equal(got.to_dense(), edge)


def test_rle_decoder_rejects_wrong_size(labels):
    rle = CroppedMasks.from_label_image(labels)[0][:1].to_rle()[0]
    with pytest.raises(Exception, match="expected 500x512"):
        decode_rle_strings([rle["counts"]], (500, 512))


def test_select_picks_topmost_by_score(ann, labels):
    y, x = np.argwhere(labels == 7)[0]
    assert ann.instance_at(x + 0.5, y + 0.5) == 70
    assert ann.instance_at(-3, 4) is None
    # an overlapping drawn instance (score 1.0) wins over the model's
    region = brush_region([(x, y)], 3, labels.shape)
    ann.apply(E.draw_instance(ann, region, class_id=1, allow_overlap=True))
    top = ann.instance_at(x, y)
    assert ann.state(top).origin == Origin.DRAWN
    assert 70 in ann and ann.state(70).crop.sum() == (labels == 7).sum()


def test_delete_class_review_undo_redo(ann):
    for edit in (E.delete(ann, [10, 30]), E.set_class(ann, [130], 5),
                 E.set_review(ann, [500, 600], Review.REJECTED), E.set_image_reviewed(ann)):
        check_roundtrip(ann, edit)
    assert 10 not in ann and ann.state(130).class_id == 5
    assert ann.state(130).origin == Origin.EDITED
    assert ann.state(600).review == Review.REJECTED and ann.reviewed
    assert ann.counts()["rejected"] == 2


def test_brush_respects_overlap_rule(ann, labels):
    # paint from the centre of nucleus 1 into a touching neighbour
    a, b = _touching_pair(labels)
    ya, xa = np.argwhere(labels == a).mean(0)
    yb, xb = np.argwhere(labels == b).mean(0)
    region = brush_region([(xa, ya), (xb, yb)], 4, labels.shape)
    edit = E.add_region(ann, a * 10, region)
    before, after = check_roundtrip(ann, edit)
    grown = ann.state(a * 10)
    assert grown.area > (labels == a).sum() and grown.origin == Origin.EDITED
    assert set(edit.after) >= {a * 10, b * 10}
    lab = ann.masks.to_dense()
    assert lab.sum(0).max() == 1  # no pixel owned twice
    # with overlap allowed the neighbour keeps its pixels
    ann.undo(edit)
    shared = E.add_region(ann, a * 10, region, allow_overlap=True)
    assert set(shared.after) == {a * 10}
    ann.apply(shared)
    assert ann.masks.to_dense().sum(0).max() == 2


def test_eraser_deletes_an_instance_erased_completely(ann, labels):
    ys, xs = np.nonzero(labels == 9)
    region = Region((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1),
                      np.ones((ys.max() - ys.min() + 1, xs.max() - xs.min() + 1), bool))
    edit = E.erase_region(ann, 90, region)
    check_roundtrip(ann, edit)
    assert 90 not in ann and edit.after[90] is None


def test_live_stroke_folds_into_one_edit(ann, labels):
    before = ann.copy()
    ys, xs = np.nonzero(labels == 13)
    stroke = Stroke(ann, 130, radius=3)
    for t in np.linspace(0, 1, 12):
        rect = stroke.move_to(xs.mean() + 40 * t, ys.mean() + 5 * t)
        assert rect is not None
    edit = stroke.finish()
    after = ann.copy()
    ann.undo(edit)
    assert ann.same_as(before)
    ann.apply(edit)
    assert ann.same_as(after)
    assert ann.masks.to_dense().sum(0).max() == 1
    # painting with nothing selected makes a new drawn instance
    fresh = Stroke(ann, None, radius=5, class_id=1)
    fresh.move_to(3, 3); fresh.move_to(12, 3)
    e2 = fresh.finish()
    new = [u for u, s in e2.after.items() if e2.before[u] is None]
    assert len(new) == 1 and ann.state(new[0]).origin == Origin.DRAWN
    assert ann.state(new[0]).class_id == 1


def test_draw_polygon_and_fill_hole(ann):
    square = [(130, 2), (170, 2), (170, 42), (130, 42)]  # a spot with no nucleus
    edit = E.draw_instance(ann, polygon_region(square, ann.image_size), class_id=0,
                           allow_overlap=True)
    check_roundtrip(ann, edit)
    uid = next(iter(u for u, s in edit.after.items() if s is not None and s.origin == Origin.DRAWN))
    s = ann.state(uid)
    assert s.area == 41 * 41
    # punch two holes, fill one by clicking into it, then the rest
    hole = Region((140, 12, 145, 17), np.ones((5, 5), bool))
    hole2 = Region((155, 27, 160, 32), np.ones((5, 5), bool))
    ann.apply(E.erase_region(ann, uid, hole))
    ann.apply(E.erase_region(ann, uid, hole2))
    one = E.fill_holes(ann, uid, at=(142, 14))
    check_roundtrip(ann, one)
    assert ann.state(uid).area == 41 * 41 - 25
    with pytest.raises(EditError, match="no hole"):
        E.fill_holes(ann, uid, at=(0, 0))
    ann.apply(E.fill_holes(ann, uid))
    assert ann.state(uid).area == 41 * 41


def test_merge_and_split(ann, labels):
    a, b = _touching_pair(labels)
    edit = E.merge(ann, [a * 10, b * 10])
    check_roundtrip(ann, edit)
    merged = ann.state(min(a, b) * 10)
    assert merged.area == (labels == a).sum() + (labels == b).sum()
    assert max(a, b) * 10 not in ann
    # split a nucleus with a vertical line through its middle
    ys, xs = np.nonzero(labels == 22)
    xm = int(np.median(xs))
    cut = E.split(ann, 220, [(xm, ys.min() - 2), (xm, ys.max() + 2)])
    check_roundtrip(ann, cut)
    parts = [s for s in cut.after.values() if s is not None]
    assert len(parts) == 2
    assert sum(p.area for p in parts) == (labels == 22).sum()  # no pixel lost
    with pytest.raises(EditError, match="does not cut"):
        E.split(ann, 300, [(0, 0), (1, 0)])


def test_unknown_uid_is_a_clear_error(ann):
    with pytest.raises(EditError, match="no instance with id 12345"):
        E.delete(ann, [12345])


def _touching_pair(labels):
    """Two nuclei labels that touch (4-neighbours)."""
    h = labels[:, :-1] != labels[:, 1:]
    both = h & (labels[:, :-1] > 0) & (labels[:, 1:] > 0)
    ys, xs = np.nonzero(both)
    if len(ys) == 0:
        v = (labels[:-1] != labels[1:]) & (labels[:-1] > 0) & (labels[1:] > 0)
        ys, xs = np.nonzero(v)
        return int(labels[ys[0], xs[0]]), int(labels[ys[0] + 1, xs[0]])
    return int(labels[ys[0], xs[0]]), int(labels[ys[0], xs[0] + 1])


def test_random_edit_sequence_undoes_and_redoes_exactly(ann, labels):
    """40 random operations, all undone in reverse and redone: every state is reproduced."""
    rng = np.random.default_rng(7)
    history, snapshots = [], [ann.copy()]
    h, w = labels.shape
    for _ in range(40):
        uids = ann.uids
        u = int(rng.choice(uids))
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        kind = rng.integers(0, 6)
        try:
            if kind == 0:
                edit = E.add_region(ann, u, brush_region([(x, y), (x + 9, y + 4)], 4, (h, w)))
            elif kind == 1:
                s = ann.state(u)
                cx, cy = (s.window[0] + s.window[2]) / 2, (s.window[1] + s.window[3]) / 2
                edit = E.erase_region(ann, u, brush_region([(cx, cy)], 5, (h, w)))
            elif kind == 2:
                edit = E.delete(ann, [u])
            elif kind == 3:
                edit = E.merge(ann, rng.choice(uids, 2, replace=False))
            elif kind == 4:
                edit = E.draw_instance(ann, polygon_region(
                    [(x, y), (x + 15, y), (x + 8, y + 12)], (h, w)), 0)
            else:
                edit = E.set_class(ann, [u], int(rng.integers(0, 3)))
        except EditError:
            continue
        ann.apply(edit)
        history.append(edit)
        snapshots.append(ann.copy())
    assert len(history) > 30
    for edit, snap in zip(reversed(history), reversed(snapshots[:-1])):
        ann.undo(edit)
        assert ann.same_as(snap)
    for edit, snap in zip(history, snapshots[1:]):
        ann.apply(edit)
        assert ann.same_as(snap)
