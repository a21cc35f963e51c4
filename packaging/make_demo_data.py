"""Training and held-out data for the demo models: the nuclei image split into left and right halves.

    .venv/bin/python packaging/make_demo_data.py OUT_DIR [--shared ../shared]

Reads ``data/nuclei/img2d.tif`` (16-bit, 512x512) and ``mask2d.tif`` (labels, 125 nuclei) and
writes COCO instance files that ``cellseg train --train/--val`` and ``cellseg eval --gt`` read:

* ``train.json``: the left half (columns 0-255) in its 8 orientations (identity, flips,
  rotations by 90 degrees, transposes: ``train_0.png`` ... ``train_7.png``). With one image the
  trainer's own augmentation is a horizontal flip only; the other orientations are the same
  pixels and nuclei seen as the microscope could have seen them.
* ``heldout.json``: the right half (columns 256-511, ``heldout.png``), never trained on.

Nuclei cut by the split line: each half keeps the part of a nucleus that lies in it, as its own
instance (a crop shows cut cells at its border, and so does any image a user opens). The
script prints how many nuclei are cut.

The whole image is converted to uint8 first, with the rule every model input gets (1..99.8
percentile stretch of the whole image, ``cellseg.core.io.image.to_uint8``), so both halves carry
exactly the pixels the app feeds the models when it opens the full sample; they are saved as
8-bit PNG, which the models read unchanged.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
SPLIT = 256  # first column of the held-out half


def _instances(labels: np.ndarray):
    from cellseg.core.structures import CroppedMasks, Instances

    masks, _ = CroppedMasks.from_label_image(labels)
    n = len(masks)
    return Instances(labels.shape, masks.tight_boxes().astype(np.float32),
                     np.ones(n, np.float32), np.zeros(n, np.int64), masks)


def _orientations(a: np.ndarray) -> list[np.ndarray]:
    """The 8 elements of the square's symmetry group applied to ``a`` (first two axes)."""
    return [np.ascontiguousarray(np.rot90(b, k)) for b in (a, a[:, ::-1]) for k in range(4)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--shared", type=Path,
                   default=Path(os.environ.get("CELLSEG_SHARED", REPO.parent / "shared")))
    args = p.parse_args(argv)
    from cellseg.core.coco.dataset import CocoImage
    from cellseg.core.coco.writer import write_coco
    from cellseg.core.io.image import to_uint8

    image = to_uint8(tifffile.imread(args.shared / "data" / "nuclei" / "img2d.tif"))
    labels = tifffile.imread(args.shared / "data" / "nuclei" / "mask2d.tif")
    args.out.mkdir(parents=True, exist_ok=True)

    left_ids = set(np.unique(labels[:, :SPLIT])) - {0}
    right_ids = set(np.unique(labels[:, SPLIT:])) - {0}
    images, insts = [], []
    for i, (img, lab) in enumerate(zip(_orientations(image[:, :SPLIT]),
                                       _orientations(labels[:, :SPLIT]))):
        name = f"train_{i}.png"
        cv2.imwrite(str(args.out / name), img)
        images.append(CocoImage(i + 1, name, *lab.shape))
        insts.append(_instances(lab))
    write_coco(args.out / "train.json", images, ["nucleus"], insts)
    cv2.imwrite(str(args.out / "heldout.png"), image[:, SPLIT:])
    held = labels[:, SPLIT:]
    write_coco(args.out / "heldout.json", [CocoImage(1, "heldout.png", *held.shape)],
               ["nucleus"], [_instances(held)])
    print(f"{args.out}: train.json (left half x 8 orientations, {len(left_ids)} nuclei), "
          f"heldout.json (right half, {len(right_ids)} nuclei); "
          f"{len(left_ids & right_ids)} nuclei cut by column {SPLIT} appear in both halves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
