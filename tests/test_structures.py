import numpy as np
import pytest
from pycocotools import mask as mask_util

from cellseg.core.structures import CroppedMasks, Instances


@pytest.fixture
def dense():
    rng = np.random.default_rng(0)
    d = rng.random((12, 60, 50)) > 0.6
    d[3] = False  # empty mask
    d[5] = False
    d[5, 59, 10] = d[5, 0, 11] = True  # run crossing a column boundary in Fortran order
    d[6] = True  # mask reaching the last pixel
    return d


def test_dense_roundtrip_and_areas(dense):
    m = CroppedMasks.from_dense(dense)
    assert np.array_equal(m.to_dense(), dense)
    assert np.array_equal(m.areas(), dense.sum((1, 2)))
    sub = m[[4, 1, 7]]
    assert np.array_equal(sub.to_dense(), dense[[4, 1, 7]])


def test_rle_matches_pycocotools(dense):
    m = CroppedMasks.from_dense(dense)
    ours = m.to_rle()
    ref = mask_util.encode(np.asfortranarray(dense.transpose(1, 2, 0).astype(np.uint8)))
    assert [r["counts"] for r in ours] == [r["counts"].decode() for r in ref]
    assert np.array_equal(CroppedMasks.from_rle(ours).to_dense(), dense)
    assert np.allclose(m.tight_boxes()[:, 2:] - m.tight_boxes()[:, :2], mask_util.toBbox(ref)[:, 2:])


def test_label_image_roundtrip():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, (30, 40))
    masks, ids = CroppedMasks.from_label_image(labels)
    assert list(ids) == [1, 2, 3, 4, 5]
    back = np.zeros_like(labels)
    back_ids = masks.label_image()
    back[back_ids > 0] = ids[back_ids[back_ids > 0] - 1]
    assert np.array_equal(back, labels)


def test_compact_memory_for_many_instances():
    # 1,000 cells of 40x40 px on a 4096x4096 image: dense bools would be 16 GB
    n, size = 1000, 4096
    xy = np.random.default_rng(2).integers(0, size - 40, (n, 2))
    windows = np.concatenate([xy, xy + 40], 1)
    crops = [np.ones((40, 40), bool)] * n
    masks = CroppedMasks.from_crops((size, size), windows, crops)
    assert masks.nbytes < 50 * 2**20
    inst = Instances((size, size), windows.astype(np.float32), np.ones(n), np.zeros(n), masks)
    assert len(inst[inst.scores > 0.5]) == n
    assert inst.masks.areas().sum() == n * 1600
