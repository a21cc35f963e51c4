"""Training on tiles of large images: the cut (crop_instances, tile_dataset) and
``cellseg train --train-tiles``."""
from __future__ import annotations

import numpy as np
import tifffile

from cellseg.app.cli import main as cli_main
from cellseg.core.coco.dataset import CocoImage, load_coco
from cellseg.core.coco.tiles import crop_instances, tile_dataset
from cellseg.core.coco.writer import write_coco
from cellseg.core.structures import CroppedMasks, Instances
from cellseg.core.tiling import TileSettings, tile_windows

from .conftest import FIXTURES


def _nuclei(nuclei_dir, reps=(1, 1)):
    image = np.tile(tifffile.imread(nuclei_dir / "img2d.tif"), reps)
    labels = tifffile.imread(nuclei_dir / "mask2d.tif").astype(np.int64)
    n = int(labels.max())
    rows = [np.concatenate([np.where(labels > 0, labels + n * (r * reps[1] + c), 0)
                            for c in range(reps[1])], axis=1) for r in range(reps[0])]
    masks, _ = CroppedMasks.from_label_image(np.concatenate(rows, axis=0))
    inst = Instances(masks.image_size, masks.tight_boxes(), np.ones(len(masks)),
                     np.zeros(len(masks)), masks)
    return image, inst


def test_crop_keeps_whole_nuclei_whole_and_cut_ones_as_their_part(nuclei_dir):
    _, inst = _nuclei(nuclei_dir)
    window = (128, 64, 384, 320)
    cropped = crop_instances(inst, window, min_area=16)
    x0, y0, x1, y1 = window
    w = inst.masks.windows
    inside = (w[:, 0] >= x0) & (w[:, 2] <= x1) & (w[:, 1] >= y0) & (w[:, 3] <= y1)
    whole = inst[np.flatnonzero(inside)]
    shifted = CroppedMasks((256, 256), whole.masks.windows - [x0, y0, x0, y0], whole.masks.data,
                           whole.masks.starts)
    dense = cropped.masks.to_dense()
    for k in range(len(shifted)):  # each whole nucleus is one cropped instance, pixel for pixel
        assert any((dense[j] == shifted.dense(k)).all() for j in range(len(dense)))
    assert len(cropped) > len(whole)  # plus the parts of nuclei cut by the window
    assert cropped.masks.areas().min() >= 16
    np.testing.assert_array_equal(cropped.boxes, cropped.masks.tight_boxes())


def test_tile_dataset_cuts_large_images_and_keeps_small_ones(tmp_path, nuclei_dir):
    big, big_inst = _nuclei(nuclei_dir, (2, 2))  # 1024 x 1024
    small, small_inst = _nuclei(nuclei_dir)
    tifffile.imwrite(tmp_path / "big.tif", big, tile=(256, 256), compression="zlib")
    tifffile.imwrite(tmp_path / "small.tif", small)
    coco = write_coco(tmp_path / "d.json", [CocoImage(1, "big.tif", 1024, 1024),
                                            CocoImage(2, "small.tif", 512, 512)],
                      ["nucleus"], [big_inst, small_inst])
    settings = TileSettings(512, 64, 1.0)
    tiles = tile_dataset(load_coco(coco), tmp_path, tmp_path / "tiles", settings)
    assert len(tiles.images) == len(tile_windows((1024, 1024), settings)) + 1 == 10
    last = tiles.images[-1]
    assert (last.height, last.width) == (512, 512)  # the small image, whole
    assert len(tiles.instances[last.id]) == len(small_inst)
    first = tiles.images[0]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "tiles" / first.file_name),
                                  big[:512, :512])
    assert tiles.class_names == ["nucleus"]


def test_cellseg_train_on_tiles(tmp_path, nuclei_dir, capsys):
    big, inst = _nuclei(nuclei_dir, (2, 2))
    tifffile.imwrite(tmp_path / "big.tif", big)
    coco = write_coco(tmp_path / "d.json", [CocoImage(1, "big.tif", 1024, 1024)], ["nucleus"],
                      [inst])
    args = ["train", "--config", str(FIXTURES / "mask_rcnn" / "config.yaml"),
            "--weights", str(FIXTURES / "mask_rcnn" / "model_final.pth"), "--train", str(coco),
            "--output", str(tmp_path / "run"), "--device", "cpu", "--defaults", "config",
            "--train-tiles", "512", "--set", "SOLVER.MAX_ITER", "1",
            "--set", "SOLVER.IMS_PER_BATCH", "1", "--set", "INPUT.MIN_SIZE_TRAIN", "(128,)"]
    assert cli_main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "training on 9 tiles of 512 px (overlap 64 px)" in out
    assert "on 9 image(s)" in out
    assert (tmp_path / "run" / "data" / "train_tiles" / "tiles.json").is_file()
    assert (tmp_path / "run" / "model_final.pth").is_file()
    bad = [a for a in args if a not in ("--train-tiles", "512")]
    assert cli_main(bad + ["--train-tile-overlap", "8"]) == 2
    assert "--train-tile-overlap needs --train-tiles" in capsys.readouterr().err
