"""Check the cellpose exchange against cellpose itself.

cellpose is not a cellseg dependency (it brings its own models); run this where both import,
e.g. a throwaway venv with ``pip install cellpose`` and cellseg installed:

    python benchmarks/check_cellpose.py --shared ../shared

1. cellpose's own ``io.masks_flows_to_seg`` writes ``img2d_seg.npy`` for the nuclei labels
   (flows as its models return them, here zeros); ``cellseg import`` turns it into a project
   whose label export is the original label image, pixel for pixel.
2. ``cellseg export --format cellpose`` writes ``img2d_cp_masks.png``; cellpose's ``io.imread``
   (what its GUI's File > Load masks and its training read) gives 125 labels whose pixels are
   the project's instances, and ``utils.outlines_list`` traces one outline per instance.

Prints one line per check and OK/FAILED; exit status 1 on failure.
"""
from __future__ import annotations

import argparse
import contextlib
import io as stdio
import os
import sys
import tempfile
from pathlib import Path

import numpy as np


def cli(*argv) -> tuple[int, str]:
    from cellseg.core.cli import main

    out = stdio.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue().strip()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", type=Path, default=Path(os.environ.get(
        "CELLSEG_SHARED", Path(__file__).resolve().parents[2] / "shared")))
    args = p.parse_args()
    import tifffile
    from cellpose import io, utils

    nuclei = args.shared / "data" / "nuclei"
    labels = tifffile.imread(nuclei / "mask2d.tif")
    image = tifffile.imread(nuclei / "img2d.tif")
    ok = True
    from importlib.metadata import version

    print(f"cellpose {version('cellpose')}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "images").mkdir()
        tifffile.imwrite(tmp / "images" / "img2d.tif", image)
        h, w = labels.shape
        flows = [np.zeros((h, w, 3), np.uint8), np.zeros((2, h, w), np.float32),
                 np.zeros((h, w), np.float32)]
        io.masks_flows_to_seg(image, labels, flows, str(tmp / "images" / "img2d.tif"))
        seg = tmp / "images" / "img2d_seg.npy"
        rc, msg = cli("project", "create", tmp / "images", "--out", tmp / "a.cellseg")
        rc, msg = cli("import", tmp / "a.cellseg", seg)
        print(f"1. cellseg import of cellpose's {seg.name}: {msg}")
        rc2, _ = cli("export", tmp / "a.cellseg", "--out", tmp / "lab", "--format", "labels")
        back = tifffile.imread(tmp / "lab" / "img2d" / "class1.tif")
        same = rc == rc2 == 0 and np.array_equal(back, labels)
        print(f"   label export equals mask2d.tif pixel for pixel: {same}")
        ok &= same
        rc, msg = cli("export", tmp / "a.cellseg", "--out", tmp / "cp", "--format", "cellpose")
        png = tmp / "cp" / "img2d_cp_masks.png"
        masks = io.imread(str(png))
        ids = np.unique(masks[masks > 0])
        # same partition of pixels: each cellpose label is exactly one original label
        pairs = np.unique(np.stack([masks[labels > 0], labels[labels > 0]]), axis=1)
        same = (rc == 0 and masks.shape == labels.shape and len(ids) == 125
                and pairs.shape[1] == 125 and np.array_equal(masks > 0, labels > 0))
        outlines = utils.outlines_list(masks)
        print(f"2. cellpose io.imread({png.name}): {masks.dtype} {masks.shape}, {len(ids)} "
              f"labels, same instances as mask2d.tif: {same}; outlines_list: {len(outlines)}")
        ok &= same and len(outlines) == 125
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
