"""``cellseg train``: fine-tune or train a Detectron2-compatible model on cell data."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "train or fine-tune a model on COCO/research-folder data (Detectron2-compatible output)"

DESCRIPTION = """\
Train or fine-tune a Detectron2-compatible instance segmentation model (Mask R-CNN, Cascade
Mask R-CNN, PointRend) and write a run folder: config.yaml, model_NNNNNNN.pth,
model_final.pth, last_checkpoint, metrics.json (one JSON object per line), evaluation/*.json
(COCO bbox/segm AP, per-category AP) and plots/*.png.

DATA is a COCO instance JSON (image file names relative to the JSON's folder) or a research
folder (<root>/<sample>/image.tif + class1.tif ... classK.tif). The class count comes from the
data. Settings: the config, then the research report's cell defaults (--defaults cells: base LR
1e-4, warm-up 1000 iterations from 0.001, steps 7000/9000, gamma 0.1, batch 4, 20000 iterations,
train sizes 400/600/800/1000 max 1333, flip, crop 0.9), then --set KEY VALUE.

Distributed: --num-gpus N (NCCL, one process per GPU) or --num-gpus 0 --num-processes P
--dist-backend gloo (CPU processes); several machines with --num-machines M --machine-rank R
--dist-url tcp://HOST:PORT (machine 0's address). SOLVER.IMS_PER_BATCH is the total batch over
all processes, as in Detectron2; each process reads its own shard of the data.

Stop: create the file STOP in the run folder (or send SIGTERM/Ctrl+C): a checkpoint is written
at the end of the iteration; continue later with --resume.

Loss check: --loss-check OUT.json trains nothing. It builds the model (config, --weights,
--set, --defaults as for training) and computes the loss dict on the first SOLVER.IMS_PER_BATCH
images of --train in file order, with every random choice taken out: shortest edge resized to
the first INPUT.MIN_SIZE_TRAIN (max INPUT.MAX_SIZE_TRAIN), no crop or flip;
MODEL.RPN.BATCH_SIZE_PER_IMAGE = the number of anchors, MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE =
RPN.POST_NMS_TOPK_TRAIN + the most instances of an image, both POSITIVE_FRACTION 1.0 (every
anchor and proposal is a sample); PointRend's random points drawn from
torch.Generator().manual_seed(0), the same for every ROI. OUT.json gets {"losses": {name:
value}, "image_ids": [...], "sampling": {the settings used}, ...}: run upstream Detectron2 with
the same settings to hold this trainer against your own build
(tests/fixtures/training/make_reference.py does exactly that).

Estimate: --estimate trains and writes nothing. It builds the run's model, starting weights,
optimizer and data loader (same settings as training) and times real iterations (next batch,
forward, backward, SGD step) on --device with the run's thread count: at least 2, the first
paying one-time start-up costs; the short edge is fixed to the size with INPUT.MIN_SIZE_TRAIN's
mean pixel count. It prints each iteration's time, then the seconds per iteration (median after
the first) and the time SOLVER.MAX_ITER iterations take (evaluations not included).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="Detectron2 config.yaml of the model (optional with "
                                         "--resume: the run folder's config.yaml is used)")
    parser.add_argument("--weights", help="starting checkpoint (.pth/.pkl); class-specific "
                                          "layers are re-initialised when the class count "
                                          "differs. Without it: train from scratch")
    parser.add_argument("--train", required=True, metavar="DATA", help="training data")
    parser.add_argument("--val", metavar="DATA", help="validation data (COCO AP)")
    parser.add_argument("--output", metavar="DIR", help="run folder (required unless "
                                                        "--loss-check)")
    parser.add_argument("--loss-check", metavar="OUT.json",
                        help="train nothing: write the loss dict of the first batch of --train "
                             "(file order, fixed resize, no augmentation, deterministic "
                             "sampling; see below) to OUT.json")
    parser.add_argument("--estimate", action="store_true",
                        help="train nothing: time real iterations of this run's settings and "
                             "print the time per iteration and for SOLVER.MAX_ITER (see below)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the run folder's last checkpoint (model, optimizer, "
                             "scheduler, iteration)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        dest="overrides", help="config override, e.g. --set SOLVER.MAX_ITER 5000")
    parser.add_argument("--defaults", choices=["cells", "config"], default="cells",
                        help="cells: apply the cell-training defaults over the config "
                             "(default); config: keep the config's solver/input settings")
    parser.add_argument("--image-root", help="folder the COCO file names are relative to "
                                             "(default: the JSON file's folder)")
    parser.add_argument("--train-tiles", type=int, metavar="SIZE",
                        help="train on tiles of SIZE px of the images larger than that (large "
                             "fields and slides at native resolution; the grid tiled "
                             "prediction uses), cut once into the run folder's data/")
    parser.add_argument("--train-tile-overlap", type=int, metavar="PX",
                        help="overlap of the training tiles (default: SIZE / 8)")
    parser.add_argument("--log-period", type=int, default=20,
                        help="iterations between metrics.json lines / progress lines")
    parser.add_argument("--eval-initial", action="store_true",
                        help="also evaluate the starting weights on --val "
                             "(evaluation/initial.json) for a before/after comparison")
    g = parser.add_argument_group("distributed")
    g.add_argument("--num-gpus", type=int, default=None, help="GPUs (processes) per machine")
    g.add_argument("--num-processes", type=int, default=1,
                   help="CPU processes per machine when --num-gpus is 0")
    g.add_argument("--num-machines", type=int, default=1)
    g.add_argument("--machine-rank", type=int, default=0)
    g.add_argument("--dist-url", default="auto", help="tcp://HOST:PORT of machine 0, or auto")
    g.add_argument("--dist-backend", default="auto", choices=["auto", "gloo", "nccl"])


def resolve_processes(args) -> tuple[str, int, str]:
    """(device, processes per machine, backend) from the command line."""
    import torch

    from cellseg.core.errors import CellsegError

    if args.num_gpus:
        if args.device == "cpu":
            raise CellsegError("--num-gpus > 0 needs --device cuda (or auto)")
        if not torch.cuda.is_available():
            raise CellsegError(f"--num-gpus {args.num_gpus}: PyTorch finds no CUDA GPU")
        device, procs = "cuda", args.num_gpus
    else:
        device = args.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() and args.num_gpus is None else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise CellsegError("--device cuda: PyTorch finds no CUDA GPU (use --device cpu)")
        procs = 1 if device == "cuda" else max(1, args.num_processes)
    backend = args.dist_backend
    if backend == "auto":
        backend = "nccl" if device == "cuda" else "gloo"
    if backend == "nccl" and device != "cuda":
        raise CellsegError("--dist-backend nccl needs GPUs; use gloo for CPU processes")
    return device, procs, backend


def run(args: argparse.Namespace) -> int:
    from cellseg.core.errors import CellsegError

    from .distributed import launch
    from .worker import set_threads, train_worker
    from .setup import prepare_run

    device, procs, backend = resolve_processes(args)
    if args.loss_check:
        return loss_check(args, device)
    if args.estimate:
        return estimate(args, device)
    if not args.output:
        raise CellsegError("--output DIR (the run folder) is required")
    world = procs * args.num_machines
    prepared = prepare_run(
        args.config, args.train, args.output, val=args.val, weights=args.weights,
        resume=args.resume, overrides=[tuple(o) for o in args.overrides],
        defaults=args.defaults, device=device, world_size=world, log_period=args.log_period,
        eval_initial=args.eval_initial, image_root=args.image_root, tiles=_tiles(args))
    for line in prepared.messages:
        print(line, flush=True)
    s = prepared.cfg.SOLVER
    print(f"training {prepared.cfg.MODEL.ROI_HEADS.NAME} on {len(prepared.train)} image(s) "
          f"({', '.join(prepared.train.class_names)}), {s.MAX_ITER} iterations, batch "
          f"{s.IMS_PER_BATCH} over {world} process(es) on {device}; run folder "
          f"{Path(args.output).resolve()}", flush=True)
    if world == 1 and device == "cpu":
        set_threads(1)
    launch(train_worker, (prepared.cfg, prepared.spec), num_processes=procs,
           num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, backend=backend)
    return 0


def _tiles(args: argparse.Namespace):
    """--train-tiles / --train-tile-overlap as TileSettings (None without --train-tiles)."""
    from cellseg.core.errors import ConfigError
    from cellseg.core.tiling.grid import TileSettings

    if args.train_tiles is None:
        if args.train_tile_overlap is not None:
            raise ConfigError("--train-tile-overlap needs --train-tiles")
        return None
    overlap = args.train_tile_overlap
    try:
        return TileSettings(args.train_tiles, args.train_tiles // 8 if overlap is None
                            else overlap, 1.0)
    except ValueError as exc:
        raise ConfigError(f"--train-tiles/--train-tile-overlap: {exc}") from exc


def loss_check(args: argparse.Namespace, device: str) -> int:
    """``--loss-check``: the losses of the first batch, written as JSON (see DESCRIPTION)."""
    import tempfile

    from cellseg.core.errors import ConfigError

    from .data import load_source
    from .loss_check import run_loss_check
    from .setup import build_config, fit_classes_to_data

    if not args.config:
        raise ConfigError("--loss-check needs --config")
    overrides = [tuple(o) for o in args.overrides]
    cfg = build_config(args.config, overrides, args.defaults)
    messages: list[str] = []
    with tempfile.TemporaryDirectory(prefix="cellseg-loss-check-") as work:
        source = load_source(args.train, work, "train", args.image_root)
        fit_classes_to_data(cfg, source, overrides, messages)
        cfg.MODEL.DEVICE = device
        cfg.freeze()
        result = run_loss_check(cfg, source, args.weights, args.loss_check, device)
    for line in messages + [f"starting weights: {w}" for w in result["weights"]]:
        print(line, flush=True)
    print(f"losses of images {result['image_ids']} (sizes {result['image_sizes']}):", flush=True)
    for name, value in result["losses"].items():
        print(f"  {name:<24} {value:.8g}", flush=True)
    print(f"written to {Path(args.loss_check).resolve()}", flush=True)
    return 0


def estimate(args: argparse.Namespace, device: str) -> int:
    """``--estimate``: time real training iterations, print the run's duration (see DESCRIPTION)."""
    import tempfile

    import torch

    from cellseg.core.errors import ConfigError

    from .data import load_source
    from .estimate import format_duration, time_iterations
    from .worker import set_threads
    from .setup import build_config, fit_classes_to_data

    if not args.config:
        raise ConfigError("--estimate needs --config")
    overrides = [tuple(o) for o in args.overrides]
    cfg = build_config(args.config, overrides, args.defaults)
    messages: list[str] = []
    if device == "cpu":
        set_threads(1)  # as the run itself: one process, all cores
    with tempfile.TemporaryDirectory(prefix="cellseg-estimate-") as work:
        source = load_source(args.train, work, "train", args.image_root)
        fit_classes_to_data(cfg, source, overrides, messages)
        cfg.MODEL.DEVICE = device
        for line in messages:
            print(line, flush=True)
        print(f"timing {cfg.MODEL.ROI_HEADS.NAME} on {device}: batch {cfg.SOLVER.IMS_PER_BATCH}"
              f", {torch.get_num_threads()} thread(s)", flush=True)

        def show(i: int, seconds: float) -> None:
            note = " (includes one-time start-up costs)" if i == 1 else ""
            print(f"timed iteration {i}: {seconds:.3f} s{note}", flush=True)

        result = time_iterations(cfg, source, args.weights, device, on_iteration=show)
    n = int(cfg.SOLVER.MAX_ITER)
    print(f"short edge {result.short_edge} px (the mean pixel count of INPUT.MIN_SIZE_TRAIN)",
          flush=True)
    print(f"per iteration: {result.seconds_per_iteration:.3f} s on {result.device} -> "
          f"{n} iterations: about {format_duration(result.total_seconds(n))} "
          "(evaluations not included)", flush=True)
    return 0
