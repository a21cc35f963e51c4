"""Check that cellseg's label-TIFF export opens in napari as a Labels layer with the right ids.

napari is not a cellseg dependency (it brings its own viewer stack); run this in a throwaway
venv with ``pip install napari tifffile imagecodecs``. No display is needed: the check uses
napari's viewer model and its built-in reader, which is what File > Open runs.

    cellseg export PROJECT --out /tmp/labels --format labels
    /tmp/napvenv/bin/python benchmarks/check_napari.py /tmp/labels/img2d/class1.tif \\
        --expect ../shared/data/nuclei/mask2d.tif

Prints the layer type, dtype, shape and instance count; with ``--expect`` (the label image the
annotations came from) also whether every pixel's id matches. Exit status 1 if a check fails.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("labels", type=Path, help="a class<k>.tif written by cellseg export")
    p.add_argument("--expect", type=Path, help="label image with the expected ids")
    args = p.parse_args()
    import napari
    import tifffile
    from napari.components import ViewerModel
    from napari.plugins import _initialize_plugins

    _initialize_plugins()  # registers the built-in reader, as napari's own start-up does
    viewer = ViewerModel()
    layers = viewer.open(str(args.labels), layer_type="labels", plugin="napari")
    layer = layers[0]
    data = np.asarray(layer.data)
    ids = np.unique(data[data > 0])
    print(f"napari {napari.__version__}: {type(layer).__name__} layer {layer.name!r}, "
          f"{data.dtype} {data.shape}, {len(ids)} instances (ids {ids.min()}..{ids.max()})")
    ok = type(layer).__name__ == "Labels"
    if args.expect is not None:
        expected = tifffile.imread(args.expect)
        same = data.shape == expected.shape and np.array_equal(data, expected)
        print(f"ids match {args.expect.name} pixel for pixel: {same}")
        ok &= same
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
