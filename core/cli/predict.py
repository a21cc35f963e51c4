"""``cellseg predict``: run one model (or an ensemble of several) on images, write COCO results."""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import numpy as np

from ..errors import CellsegError, DataError

HELP = "run Detectron2-compatible models on images and write COCO results JSON"
DESCRIPTION = """\
Run a Detectron2 model (config.yaml + model_final.pth/.pkl) on images and write the
predictions in COCO *results* format: image_id, file_name, category_id (= class index + 1),
bbox (XYWH), score and segmentation (compressed RLE).

By default the output is the model's own, exactly as Detectron2 would produce it, including
the config's TEST.DETECTIONS_PER_IMAGE cap (Detectron2's default is 100, fewer than the cells
in many images: raise it with --detections-per-image). Post-processing is opt-in:
--soft-nms, --wbf (with two or more --model), --score-threshold.

Images are converted by the documented rule (8-bit as is; 16-bit/float by a 1..99.8
percentile stretch; grayscale repeated to 3 channels).

Large images: --tile predicts tile by tile at native resolution (--tile-scale) instead of
shrinking the whole image to INPUT.MIN_SIZE_TEST, one stretch for the whole image, and merges
instances across tile seams (cellseg.core.tiling.stitch documents the rule). The
TEST.DETECTIONS_PER_IMAGE cap then applies per tile."""


def add_arguments(p) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files or folders of images (TIFF, PNG, JPEG), or OME-Zarr "
                        "images (.zarr folders)")
    p.add_argument("--config", help="Detectron2 config.yaml of the model")
    p.add_argument("--weights", help="checkpoint (.pth or model-zoo .pkl) of the model")
    p.add_argument("--model", nargs=2, action="append", metavar=("CONFIG", "WEIGHTS"),
                   default=[], help="a model as CONFIG WEIGHTS; repeat for an ensemble "
                                    "(two or more need --wbf)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to run (default: auto = the GPU when there is one)")
    p.add_argument("--precision", default="exact", choices=["exact", "fast"],
                   help="exact (default): float32, Detectron2's numbers; fast: backbone in "
                        "bfloat16 on CPUs with AVX512-BF16/AMX, float16 on CUDA (faster, "
                        "slightly different outputs; falls back to exact elsewhere, saying so)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation as the config's TEST.AUG says (multi-scale + "
                        "flip; roughly 10-20x slower)")
    p.add_argument("--detections-per-image", type=int, metavar="N",
                   help="override TEST.DETECTIONS_PER_IMAGE (the per-image cap)")
    p.add_argument("--soft-nms", nargs="?", const="linear", choices=["linear", "gaussian"],
                   help="apply Soft-NMS to each model's output (default method: linear)")
    p.add_argument("--soft-nms-sigma", type=float, default=0.5, help="Gaussian Soft-NMS sigma")
    p.add_argument("--wbf", action="store_true",
                   help="fuse the models' predictions with Weighted Boxes Fusion (boxes and masks)")
    p.add_argument("--score-threshold", type=float, default=0.0,
                   help="drop predictions scoring below this (default 0: keep all)")
    p.add_argument("--tile", type=int, nargs="?", const=0, metavar="SIZE",
                   help="predict large images tile by tile at native resolution instead of "
                        "shrinking them to INPUT.MIN_SIZE_TEST; SIZE in image pixels (alone: "
                        "the config's largest INPUT.MIN_SIZE_TRAIN); instances cut by tile "
                        "seams are merged and duplicates from the overlaps removed")
    p.add_argument("--overlap", type=int, metavar="PX",
                   help="pixels shared by neighbouring tiles (default: tile / 8); make it "
                        "wider than the largest cell")
    p.add_argument("--tile-scale", type=float, metavar="S",
                   help="model input pixels per image pixel for tiles (default 1.0: native "
                        "resolution; 2 enlarges tiles two-fold)")
    p.add_argument("--boxes", metavar="BOXES_JSON",
                   help="predict masks for these boxes instead of detecting (Detectron2's "
                        "forward_with_given_boxes): a COCO results or annotation file, or a "
                        "list of {\"bbox\": [x, y, w, h], \"category_id\": k}; each box keeps "
                        "its class (none given: the box head's best) and score (else 1.0)")
    p.add_argument("--image-ids-from", metavar="GT_JSON",
                   help="take image_id from a COCO ground-truth file by file name, so that "
                        "`cellseg eval` can match the results")
    p.add_argument("--out", required=True, help="output COCO results JSON")


def _image_paths(items: list[str]) -> list[Path]:
    from ..io import IMAGE_SUFFIXES

    paths = []
    from ..io.large import is_zarr

    for item in items:
        path = Path(item)
        if is_zarr(path):  # an OME-Zarr image is a folder
            paths.append(path)
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"no images in folder {path}")
            paths.extend(found)
        else:
            paths.append(path)  # read_image reports missing/unsupported files
    return paths


def _models(args) -> list[tuple[str, str]]:
    models = list(map(tuple, args.model))
    if args.config or args.weights:
        if not (args.config and args.weights):
            raise CellsegError("--config and --weights go together")
        models.insert(0, (args.config, args.weights))
    if not models:
        raise CellsegError("give a model: --config C --weights W (or --model C W)")
    if len(models) > 1 and not args.wbf:
        raise CellsegError("several models need --wbf to fuse them")
    return models


def _image_ids(gt_path: str | None, paths: list[Path]) -> list[int]:
    if gt_path is None:
        return list(range(1, len(paths) + 1))
    try:
        gt = json.loads(Path(gt_path).read_text())
        by_name = {Path(im["file_name"]).name: int(im["id"]) for im in gt["images"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"cannot read image ids from {gt_path}: {exc}") from exc
    missing = [p.name for p in paths if p.name not in by_name]
    if missing:
        raise DataError(f"{gt_path} has no image named {missing[0]}")
    return [by_name[p.name] for p in paths]


def run(args) -> int:
    from ..engine import load_predictor

    models = _models(args)
    paths = _image_paths(args.images)
    ids = _image_ids(args.image_ids_from, paths)
    prompts = _box_file(args, models, paths)
    overrides = ([] if args.detections_per_image is None
                 else ["TEST.DETECTIONS_PER_IMAGE", str(args.detections_per_image)])
    predictors = [load_predictor(c, w, args.device, overrides, precision=args.precision)
                  for c, w in models]
    if args.precision != "exact":
        print(predictors[0].precision.note, file=sys.stderr)
    postprocess = _pipeline(args, len(predictors))
    results = []
    for n, (path, image_id) in enumerate(zip(paths, ids), 1):
        with _read(path, tiled=args.tile is not None) as image:
            if prompts is not None:
                raw = {"model0": _given_boxes(predictors[0], image,
                                              prompts.for_image(path.name, image_id))}
            else:
                raw = {f"model{i}": _predict(p, image, args, path.name)
                       for i, p in enumerate(predictors)}
        instances = postprocess(raw)
        results.extend(instances.to_coco_results(image_id, path.name))
        print(f"[{n}/{len(paths)}] {path.name}: {len(instances)} instances", file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(results))
    tmp.replace(out)
    print(f"wrote {len(results)} predictions for {len(paths)} images to {out}", file=sys.stderr)
    return 0


def _box_file(args, models, paths):
    """The --boxes prompts, after checking they go with the other options."""
    if args.boxes is None:
        return None
    from ..interop.box_prompts import read_box_file

    if len(models) > 1 or args.tta or args.tile is not None:
        raise CellsegError("--boxes takes one model, without --tta or --tile")
    prompts = read_box_file(args.boxes)
    if prompts.anywhere is not None and len(paths) > 1:
        raise DataError(f"{args.boxes} is a plain list of boxes: give one image with it")
    return prompts


def _given_boxes(predictor, image, prompts):
    """Masks for one image's given boxes (classes checked against the model)."""
    from ..engine.given_boxes import encode, masks_for_boxes

    if prompts.classes is not None and len(prompts.classes) and \
            prompts.classes.max() >= predictor.num_classes:
        raise DataError(f"a box has category_id {int(prompts.classes.max()) + 1} but the model "
                        f"has {predictor.num_classes} classes")
    return masks_for_boxes(predictor, encode(predictor, image), prompts.boxes, prompts.classes,
                           prompts.scores)


def _read(path: Path, tiled: bool):
    """The image as a context: a LargeImage that tiles read window by window (also for any
    OME-Zarr), else the whole array as ``read_image`` gives it."""
    from ..io import read_image
    from ..io.large import is_zarr, open_large

    if tiled or is_zarr(path):
        return open_large(path)
    return contextlib.nullcontext(read_image(path))


def _tile_settings(args, predictor):
    """The --tile/--overlap/--tile-scale settings, defaults from the model's config."""
    from ..tiling import TileSettings, default_tile_settings

    default = default_tile_settings(predictor.cfg)
    tile = args.tile or default.tile
    overlap = args.overlap if args.overlap is not None else tile // 8
    scale = args.tile_scale if args.tile_scale is not None else default.scale
    try:
        return TileSettings(tile, overlap, scale)
    except ValueError as exc:
        raise CellsegError(f"--tile/--overlap/--tile-scale: {exc}") from exc


def _predict(predictor, image, args, name: str):
    """One model on one image: whole, or tiled with a progress bar on stderr."""
    if args.tile is None:
        if args.overlap is not None or args.tile_scale is not None:
            raise CellsegError("--overlap and --tile-scale need --tile")
        return predictor(image if isinstance(image, np.ndarray) else image[:], tta=args.tta)
    from ..tiling import predict_tiled

    from ..io.image import stretch_limits

    settings = _tile_settings(args, predictor)
    bar = ProgressBar(f"{name} tiles")
    result = predict_tiled(predictor, image, settings, tta=args.tta, progress=bar,
                           limits=stretch_limits(image.overview()))
    bar.close()
    return result


class ProgressBar:
    """A one-line text progress bar on stderr (redrawn in place on a terminal)."""

    WIDTH = 30

    def __init__(self, label: str, stream=None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()

    def __call__(self, stage: str, done: int, total: int) -> None:
        from ..progress import TILE

        if stage != TILE:
            return
        filled = self.WIDTH * done // max(total, 1)
        line = f"{self.label} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{total}"
        if self.tty:
            self.stream.write("\r" + line)
        elif done == total or done == 1 or done % max(1, total // 10) == 0:
            self.stream.write(line + "\n")  # a log file gets about ten lines, not one per tile
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _pipeline(args, n_models: int):
    """Identity unless post-processing was asked for (the model's own output by default)."""
    if not (args.soft_nms or args.wbf or args.score_threshold > 0):
        return lambda raw: next(iter(raw.values()))
    from ..postprocess.pipeline import Settings, compose

    settings = Settings(soft_nms=bool(args.soft_nms), soft_nms_method=args.soft_nms or "linear",
                        soft_nms_sigma=args.soft_nms_sigma, wbf=args.wbf and n_models > 1,
                        score_threshold=args.score_threshold)
    return lambda raw: compose(raw, settings)
