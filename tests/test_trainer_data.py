"""Trainer data: research folders and COCO files, the model-input rule, batches, the
reproducible project split."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import tifffile
import torch

from cellseg.core.config import get_default_config
from cellseg.core.errors import DataError
from cellseg.core.io import to_model_input
from cellseg.trainer.data import ImageCache, TrainLoader, load_source
from cellseg.trainer.project_data import split_names


@pytest.fixture
def seed_folder(tmp_path, nuclei_dir):
    """Two research samples: image.tif (uint16) + class1.tif/class2.tif label images."""
    image = tifffile.imread(nuclei_dir / "img2d.tif")
    labels = tifffile.imread(nuclei_dir / "mask2d.tif")
    root = tmp_path / "seed"
    for k, (y, x) in enumerate(((0, 0), (256, 256))):
        d = root / f"sample{k}"
        d.mkdir(parents=True)
        tifffile.imwrite(d / "image.tif", image[y:y + 192, x:x + 192])
        lab = labels[y:y + 192, x:x + 192]
        small = np.isin(lab, np.unique(lab)[1::2])  # every other nucleus is "class 2"
        tifffile.imwrite(d / "class1.tif", np.where(small, 0, lab).astype(np.uint16))
        tifffile.imwrite(d / "class2.tif", np.where(small, lab, 0).astype(np.uint16))
    return root


def test_research_folder_trains_like_coco(seed_folder, tmp_path):
    source = load_source(seed_folder, tmp_path / "run" / "data", "train")
    assert source.class_names == ["class1", "class2"] and len(source) == 2
    assert (tmp_path / "run" / "data" / "train.json").is_file()
    cfg = get_default_config().clone()
    cfg.INPUT.MIN_SIZE_TRAIN = [96]
    cfg.INPUT.FORMAT = "RGB"
    loader = TrainLoader(source, cfg, batch_per_rank=3, seed=0)
    images, targets = next(loader)
    assert len(images) == 3
    for im, t in zip(images, targets):
        assert im.dtype == torch.uint8 and im.shape[0] == 3 and min(im.shape[1:]) == 96
        assert t["masks"].shape[1:] == im.shape[1:] and t["masks"].dtype == torch.bool
        assert set(t["classes"].tolist()) == {0, 1}
        assert len(t["boxes"]) == len(t["classes"]) == len(t["masks"]) > 5
    # 16-bit image converted by the engine's documented rule, in the config's channel order
    cache = ImageCache(source, "BGR")
    first = source.dataset.images[0]
    raw = tifffile.imread(source.image_path(first.id))
    assert raw.dtype == np.uint16
    assert np.array_equal(cache(first.id), to_model_input(raw, "BGR"))


def test_bad_data_is_named(tmp_path, seed_folder):
    with pytest.raises(DataError, match="training data not found"):
        load_source(tmp_path / "nothing.json")
    (seed_folder / "sample0" / "class1.tif").write_bytes(b"not a tiff")
    with pytest.raises(DataError, match="class1.tif"):
        load_source(seed_folder, tmp_path / "run", "train")


def test_project_split_is_reproducible_and_disjoint():
    names = [f"img{i:03d}.tif" for i in range(20)]
    train, val = split_names(names, 0.2, seed=7)
    assert len(val) == 4 and len(train) == 16 and not set(train) & set(val)
    assert sorted(train + val) == names
    shuffled = list(reversed(names))
    assert split_names(shuffled, 0.2, seed=7) == (train, val)  # order of listing irrelevant
    assert split_names(names, 0.2, seed=8) != (train, val)
    assert split_names(["a.tif"], 0.2, 0) == (["a.tif"], [])  # one image: no validation
    assert split_names(["a.tif", "b.tif"], 0.01, 0)[1]  # at least one validation image
    with pytest.raises(DataError):
        split_names(names, 1.0, 0)


def test_loader_skips_images_without_annotations(tmp_path, nuclei_dir):
    from cellseg.core.coco.dataset import CocoImage
    from cellseg.core.coco.writer import write_coco
    from cellseg.core.structures import CroppedMasks, Instances

    image = tifffile.imread(nuclei_dir / "img2d.tif")
    labels = tifffile.imread(nuclei_dir / "mask2d.tif")
    tifffile.imwrite(tmp_path / "a.tif", image[:64, :64])
    tifffile.imwrite(tmp_path / "b.tif", image[:64, :64])
    m, _ = CroppedMasks.from_label_image(labels[:64, :64])
    full = Instances((64, 64), m.tight_boxes().astype(np.float32), np.ones(len(m), np.float32),
                     np.zeros(len(m), np.int64), m)
    write_coco(tmp_path / "d.json", [CocoImage(1, "a.tif", 64, 64), CocoImage(2, "b.tif", 64, 64)],
               ["nucleus"], [full, Instances.empty((64, 64))])
    cfg = get_default_config().clone()
    cfg.INPUT.MIN_SIZE_TRAIN = [64]
    loader = TrainLoader(load_source(tmp_path / "d.json"), cfg, 1, seed=0)
    assert loader.ids == [1]
    assert all(len(t[0]["boxes"]) for _, t in itertools.islice(loader, 4))
