"""``cellseg convert``: research (seed) folders <-> COCO, losslessly."""
from __future__ import annotations

from pathlib import Path

HELP = "convert seed-style sample folders (image.tif + classK.tif label masks) to COCO and back"
DESCRIPTION = """\
Seed folders hold one folder per sample with image.tif and instance-label masks class1.tif ...
classK.tif (0 = background, each other value one instance of that class).

  cellseg convert DATASET_DIR out.json     folders -> one COCO file (file_name relative to
                                           DATASET_DIR; categories class1..classK or
                                           --class-names)
  cellseg convert in.json OUT_DIR          COCO -> one folder per image with classK.tif label
                                           images (+ image.tif when the image is found under
                                           --images-root, default: the JSON's folder)

Each instance keeps its label value (annotation field "label_id"), so folders -> COCO ->
folders gives back the label images pixel for pixel. COCO files without label_id are
numbered 1..n per class; overlapping instances of one class cannot all be kept in a label
image (the later annotation wins and the number of such pixels is reported)."""


def add_arguments(p) -> None:
    p.add_argument("source", help="seed dataset folder, or a COCO JSON file")
    p.add_argument("destination", help="COCO JSON file to write, or a folder to write into")
    p.add_argument("--class-names", metavar="NAMES",
                   help="comma-separated category names for class1..classK (folders -> COCO)")
    p.add_argument("--segmentation", choices=["rle", "polygon"], default="rle",
                   help="mask encoding in the COCO file (rle: lossless, default; polygon: outer "
                        "outlines, holes are filled)")
    p.add_argument("--images-root", metavar="DIR",
                   help="where the COCO file's images are (COCO -> folders)")


def run(args) -> int:
    from ..coco.research_folder import coco_to_seed, seed_to_coco
    from ..errors import DataError

    src, dst = Path(args.source), Path(args.destination)
    if src.is_dir():
        if dst.suffix.lower() != ".json":
            raise DataError(f"converting folders in {src} to COCO: the destination must be a "
                            f".json file, got {dst}")
        names = ([n.strip() for n in args.class_names.split(",")] if args.class_names
                 else None)
        if names is not None and (not all(names) or len(set(names)) != len(names)):
            raise DataError(f"--class-names must be distinct non-empty names, got "
                            f"{args.class_names!r}")
        ds = seed_to_coco(src, dst, names, args.segmentation)
        print(f"wrote {dst}: {len(ds.images)} images, {ds.num_instances()} instances, "
              f"categories {', '.join(ds.class_names)}; images are relative to {src}")
        return 0
    if src.suffix.lower() == ".json":
        if dst.suffix.lower() == ".json" or (dst.exists() and not dst.is_dir()):
            raise DataError(f"converting {src} to folders: the destination must be a folder, "
                            f"got {dst}")
        summary = coco_to_seed(src, dst, args.images_root)
        print(f"wrote {summary['images']} sample folders with {summary['instances']} instances "
              f"to {dst}")
        if summary["overlap_pixels"]:
            print(f"note: {summary['overlap_pixels']} pixels where instances of one class "
                  "overlap kept only the later annotation")
        if summary["images_missing"]:
            print(f"note: {len(summary['images_missing'])} images not found (label masks "
                  f"written without image.tif), e.g. {summary['images_missing'][0]}; "
                  "give their folder with --images-root")
        return 0
    if not src.exists():
        raise DataError(f"not found: {src}")
    raise DataError(f"cannot tell how to convert {src}: give a seed dataset folder or a COCO "
                    ".json file")
