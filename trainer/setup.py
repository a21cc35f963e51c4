"""Run preparation: the config a run trains with, its data, and the run folder.

Order of settings (later wins): the model's ``config.yaml`` -> the cell-training defaults of
the research report (:data:`CELL_DEFAULTS`, unless ``defaults="config"``) -> ``--set KEY VALUE``
overrides -> what the data decides (``MODEL.ROI_HEADS.NUM_CLASSES`` = number of categories,
also ``MODEL.POINT_HEAD.NUM_CLASSES`` for PointRend). The result is written to
``<output>/config.yaml``, a plain Detectron2 dump that upstream Detectron2 and the app load.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cellseg.core.config import load_config
from cellseg.core.errors import ConfigError, DataError
from cellseg.core.tiling.grid import TileSettings

from .data import DataSource, check_same_classes, load_source
from .worker import RunSpec

# The research report's fine-tuning recipe for cells (KEY, VALUE strings as on a command line)
CELL_DEFAULTS: list[tuple[str, str]] = [
    ("SOLVER.BASE_LR", "0.0001"),
    ("SOLVER.WARMUP_ITERS", "1000"),
    ("SOLVER.WARMUP_FACTOR", "0.001"),
    ("SOLVER.WARMUP_METHOD", "linear"),
    ("SOLVER.STEPS", "(7000, 9000)"),
    ("SOLVER.GAMMA", "0.1"),
    ("SOLVER.IMS_PER_BATCH", "4"),
    ("SOLVER.MAX_ITER", "20000"),
    ("SOLVER.LR_SCHEDULER_NAME", "WarmupMultiStepLR"),
    ("INPUT.MIN_SIZE_TRAIN", "(400, 600, 800, 1000)"),
    ("INPUT.MIN_SIZE_TRAIN_SAMPLING", "choice"),
    ("INPUT.MAX_SIZE_TRAIN", "1333"),
    ("INPUT.RANDOM_FLIP", "horizontal"),
    ("INPUT.CROP.ENABLED", "True"),
    ("INPUT.CROP.TYPE", "relative_range"),
    ("INPUT.CROP.SIZE", "(0.9, 0.9)"),
]


@dataclass
class PreparedRun:
    cfg: object  # frozen CfgNode
    spec: RunSpec
    train: DataSource
    val: DataSource | None
    messages: list[str]


def build_config(config: str | Path, overrides: list[tuple[str, str]] = (),
                 defaults: str = "cells"):
    cfg = load_config(config).clone()
    if defaults == "cells":
        cfg.merge_from_list([x for kv in CELL_DEFAULTS for x in kv])
    elif defaults != "config":
        raise ConfigError(f"--defaults: expected 'cells' or 'config', got {defaults!r}")
    cfg.merge_from_list([x for kv in overrides for x in kv])
    return cfg


def fit_classes_to_data(cfg, train: DataSource, overrides: list[tuple[str, str]],
                        messages: list[str]) -> None:
    """Set ``MODEL.ROI_HEADS.NUM_CLASSES`` (and PointRend's ``POINT_HEAD.NUM_CLASSES``) to the
    data's category count; an explicit ``--set`` that disagrees is an error."""
    k = len(train.class_names)
    if k == 0:
        raise DataError(f"{train.spec}: no categories")
    set_keys = {key for key, _ in overrides}
    r = cfg.MODEL.ROI_HEADS
    if r.NUM_CLASSES != k:
        if "MODEL.ROI_HEADS.NUM_CLASSES" in set_keys:
            raise ConfigError(f"MODEL.ROI_HEADS.NUM_CLASSES was set to {r.NUM_CLASSES} but the "
                              f"training data has {k} categories ({train.class_names})")
        messages.append(f"MODEL.ROI_HEADS.NUM_CLASSES: {r.NUM_CLASSES} in the config, {k} in "
                        f"the data ({', '.join(train.class_names)}): using {k}")
        r.NUM_CLASSES = k
    if cfg.MODEL.ROI_MASK_HEAD.NAME == "PointRendMaskHead":
        cfg.MODEL.POINT_HEAD.NUM_CLASSES = k


def prepare_run(config: str | Path | None, train: str, output: str | Path, *,
                val: str | None = None, weights: str | None = None, resume: bool = False,
                overrides: list[tuple[str, str]] = (), defaults: str = "cells",
                device: str = "cpu", world_size: int = 1, log_period: int = 20,
                eval_initial: bool = False, image_root: str | None = None,
                tiles: TileSettings | None = None) -> PreparedRun:
    """Check everything a run needs before any process starts; write the run's config.yaml.

    ``tiles``: train (and validate) on tiles of the images larger than one tile, cut once into
    the run folder's ``data/`` (:func:`cellseg.core.coco.tiles.tile_dataset`).
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    saved = output / "config.yaml"
    (output / "STOP").unlink(missing_ok=True)  # a stop request left from an earlier run
    messages = []
    if config is None:
        if not (resume and saved.is_file()):
            raise ConfigError("--config is required (unless --resume finds config.yaml in the "
                              "run folder)")
        cfg = build_config(saved, overrides, defaults="config")
        messages.append(f"using the run's own {saved}")
    else:
        cfg = build_config(config, overrides, defaults)
    data_dir = output / "data"
    train_src = load_source(train, data_dir, "train", image_root)
    val_src = load_source(val, data_dir, "val", image_root) if val else None
    if tiles is not None:
        train_src = _tiled(train_src, data_dir / "train_tiles", tiles)
        val_src = _tiled(val_src, data_dir / "val_tiles", tiles) if val_src else None
        messages.append(f"training on {len(train_src)} tiles of {tiles.tile} px "
                        f"(overlap {tiles.overlap} px)")
    if val_src is not None:
        check_same_classes(train_src, val_src)
    fit_classes_to_data(cfg, train_src, overrides, messages)
    s = cfg.SOLVER
    if s.IMS_PER_BATCH % world_size or s.IMS_PER_BATCH < world_size:
        raise ConfigError(f"SOLVER.IMS_PER_BATCH ({s.IMS_PER_BATCH}) is the total batch over all "
                          f"{world_size} processes and must be a multiple of it")
    if s.MAX_ITER < 1:
        raise ConfigError("SOLVER.MAX_ITER must be at least 1")
    if not cfg.MODEL.MASK_ON:
        raise ConfigError("MODEL.MASK_ON is false: the trainer trains instance segmentation "
                          "models")
    cfg.OUTPUT_DIR = str(output)
    cfg.MODEL.DEVICE = device
    if weights:
        cfg.MODEL.WEIGHTS = str(weights)
    cfg.DATASETS.TRAIN = ["cellseg_train"]
    cfg.DATASETS.TEST = ["cellseg_val"] if val_src is not None else []
    seed = int(cfg.SEED) if int(cfg.SEED) >= 0 else int.from_bytes(os.urandom(2), "little")
    cfg.freeze()
    if not (resume and config is None):
        saved.write_text(cfg.dump(), encoding="utf-8")
    _write_class_names(output, train_src.class_names)
    spec = RunSpec(
        output=output, train_json=Path(train_src.dataset.path), train_root=train_src.image_root,
        val_json=Path(val_src.dataset.path) if val_src else None,
        val_root=val_src.image_root if val_src else None, weights=weights, resume=resume,
        device=device, log_period=max(1, int(log_period)), eval_initial=eval_initial, seed=seed,
        class_names=list(train_src.class_names))
    return PreparedRun(cfg, spec, train_src, val_src, messages)


def _tiled(source: DataSource, out_dir: Path, tiles: TileSettings) -> DataSource:
    from cellseg.core.coco.tiles import tile_dataset

    return DataSource(tile_dataset(source.dataset, source.image_root, out_dir, tiles), out_dir,
                      source.spec)


def _write_class_names(output: Path, names: list[str]) -> None:
    import json

    (output / "class_names.json").write_text(json.dumps({"class_names": list(names)}) + "\n",
                                             encoding="utf-8")
