"""Label TIFFs: the plain layout for ordinary images, tiled band by band for huge ones."""
from __future__ import annotations

import numpy as np
import tifffile

from cellseg.core.io.label_tiff import write_label_tiff
from cellseg.core.structures import CroppedMasks


def _mosaic_masks(nuclei_dir, reps=(3, 5)):
    labels = tifffile.imread(nuclei_dir / "mask2d.tif").astype(np.int64)
    n = int(labels.max())
    rows = [np.concatenate([np.where(labels > 0, labels + n * (r * reps[1] + c), 0)
                            for c in range(reps[1])], axis=1) for r in range(reps[0])]
    return CroppedMasks.from_label_image(np.concatenate(rows, axis=0))


def test_tiled_label_tiff_equals_the_whole_label_image(tmp_path, nuclei_dir):
    masks, ids = _mosaic_masks(nuclei_dir)  # 1536 x 2560, 1,875 nuclei; not a tile multiple
    # two instances overlapping on purpose: the later one must win in both layouts
    extra = np.zeros((2,) + masks.image_size, bool)
    extra[0, 300:340, 255:300] = True
    extra[1, 320:360, 280:330] = True
    masks = CroppedMasks.cat([masks, CroppedMasks.from_dense(extra)])
    values = np.concatenate([ids, [70000, 70001]])
    whole = write_label_tiff(tmp_path / "whole.tif", masks, values, np.uint32)
    tiled = write_label_tiff(tmp_path / "tiled.tif", masks, values, np.uint32, tiled_above=0)
    assert whole == tiled > 0  # the same overlap count
    with tifffile.TiffFile(tmp_path / "tiled.tif") as tif:
        page = tif.pages[0]
        assert page.is_tiled and page.compression != 1 and page.shape == masks.image_size
        back = page.asarray()
    np.testing.assert_array_equal(back, tifffile.imread(tmp_path / "whole.tif"))
    again, got = CroppedMasks.from_label_image(back)
    assert len(got) == len(values) and back[330, 290] == 70001  # later wins


def test_seed_export_of_a_large_image_is_tiled_and_round_trips(tmp_path, nuclei_dir):
    """coco_to_seed on a 4352 x 4096 image (above the tiled threshold) reads back equal."""
    from cellseg.core.coco.dataset import CocoImage
    from cellseg.core.coco.research_folder import coco_to_seed, seed_to_coco
    from cellseg.core.coco.writer import write_coco
    from cellseg.core.structures import Instances

    masks, ids = _mosaic_masks(nuclei_dir, reps=(8, 8))  # 4096 x 4096, 8,000 nuclei
    big = CroppedMasks((4352, 4096), masks.windows, masks.data, masks.starts)
    inst = Instances(big.image_size, big.tight_boxes(), np.ones(len(ids)), np.zeros(len(ids)),
                     big)
    tifffile.imwrite(tmp_path / "big.tif", np.zeros((4352, 4096), np.uint8), compression="zlib")
    coco = write_coco(tmp_path / "big.json", [CocoImage(1, "big.tif", 4352, 4096)], ["nucleus"],
                      [inst])
    summary = coco_to_seed(coco, tmp_path / "seed")
    assert summary["instances"] == 8000 and summary["overlap_pixels"] == 0
    label_file = next((tmp_path / "seed").rglob("class1.tif"))
    with tifffile.TiffFile(label_file) as tif:
        assert tif.pages[0].is_tiled
    back = seed_to_coco(tmp_path / "seed", tmp_path / "back.json")
    again = back.instances[back.images[0].id]
    assert len(again) == 8000 and again.masks == inst.masks
