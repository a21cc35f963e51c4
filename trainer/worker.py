"""One training process: build the model, data and solver for this rank, register the hooks and
run the :class:`~cellseg.trainer.loop.Trainer`.

``train_worker`` is what :func:`cellseg.trainer.distributed.launch` runs on every rank (or once,
in the calling process, for a single CPU process). Rank 0 writes the run folder (see
:mod:`cellseg.trainer.hooks`); a run stopped by a stop request is continued with ``--resume``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cellseg.core.errors import ConfigError

from .checkpointing import RunCheckpointer, load_pretrained
from .data import TrainLoader, load_source
from .hooks import (METRICS_FILE, Checkpointer, Evaluator, LossCheck, MetricsLogger, MetricsWriter,
                    PlotWriter, StopRequest)
from .loop import Trainer
from .solver import build_lr_scheduler, build_optimizer, gradient_clipper, lr_multiplier


@dataclass
class RunSpec:
    """Everything a rank needs besides the config (picklable, for spawned processes)."""

    output: Path
    train_json: Path
    train_root: Path
    val_json: Path | None = None
    val_root: Path | None = None
    weights: str | None = None
    resume: bool = False
    device: str = "cpu"
    log_period: int = 20
    eval_initial: bool = False
    seed: int = 0
    class_names: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    status: str  # "finished", "stopped" or "already finished"
    start_iter: int
    last_iter: int
    checkpoint: Path | None
    final_eval: dict | None = None


def train_worker(rank: int, world: int, local_rank: int, cfg, spec: RunSpec) -> RunResult:
    """Train on this rank (``torch.distributed`` already initialised when ``world > 1``)."""
    from cellseg.core.engine.meta_arch import build_model

    # a process group of one (launch(..., spawn=True)) still takes the distributed path
    distributed = world > 1 or (torch.distributed.is_available()
                                and torch.distributed.is_initialized())
    device = torch.device(f"cuda:{local_rank}" if spec.device == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(spec.seed + rank)
    s = cfg.SOLVER
    max_iter = int(s.MAX_ITER)
    amp = bool(s.AMP.ENABLED) and device.type == "cuda"

    train = load_source(spec.train_json, image_root=spec.train_root)
    val = load_source(spec.val_json, image_root=spec.val_root) if spec.val_json else None
    try:
        model = build_model(cfg).to(device)
    except (ValueError, KeyError, AttributeError) as exc:
        raise ConfigError(f"cannot build the model from the config: {exc}") from exc
    model.train()
    optimizer = build_optimizer(model, cfg)
    scheduler = build_lr_scheduler(optimizer, cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    checkpointer = RunCheckpointer(spec.output, model, optimizer, scheduler, scaler)
    start = checkpointer.resume() if spec.resume else 0
    if spec.resume and start > 0:
        _log(rank, f"resuming from {checkpointer.last_checkpoint().name} at iteration {start}")
    elif spec.weights:
        report = load_pretrained(model, spec.weights)
        for line in report.lines():
            _log(rank, f"initialising from {spec.weights}: {line}")
    else:
        _log(rank, "training from scratch (no starting weights)")
    if start >= max_iter:
        _log(rank, f"nothing to do: the run already reached SOLVER.MAX_ITER {max_iter}")
        return RunResult("already finished", start, start - 1, checkpointer.last_checkpoint())

    writer = MetricsWriter(spec.output / METRICS_FILE, start) if rank == 0 else None
    hooks = [StopRequest(spec.output, rank), LossCheck()]
    if rank == 0:
        hooks += [MetricsLogger(writer, spec.log_period, float(s.BASE_LR), lr_multiplier(cfg)),
                  Checkpointer(checkpointer, int(s.CHECKPOINT_PERIOD))]
    hooks.append(Evaluator(cfg, val, spec.output, rank, writer, int(cfg.TEST.EVAL_PERIOD),
                           spec.eval_initial))
    if rank == 0:
        hooks.append(PlotWriter(spec.output))
    loader = TrainLoader(train, cfg, int(s.IMS_PER_BATCH) // world, spec.seed, rank, world, start)
    trainer = Trainer(model, loader, optimizer, scheduler, scaler, gradient_clipper(cfg), device,
                      start, max_iter, distributed, world, amp, hooks)
    trainer.train()
    if distributed:
        torch.distributed.barrier()
    return RunResult(trainer.status, start, trainer.completed, trainer.checkpoint,
                     trainer.final_eval)


def _log(rank: int, text: str) -> None:
    if rank == 0:
        print(text, flush=True)


def set_threads(num_local_processes: int) -> None:
    """Share the CPU cores between the processes of this machine."""
    cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // max(1, num_local_processes)))


__all__ = ["RunSpec", "RunResult", "train_worker", "set_threads"]
