"""The training loop: a :class:`Trainer` whose ``run_step`` does one iteration, and hooks.

As in Detectron2's ``engine/train_loop.py``, the loop itself only updates the weights; everything
else a run does (metrics and the console line, checkpoints, evaluation, stop requests, the
NaN/inf check) is a :class:`HookBase` in :mod:`cellseg.trainer.hooks`. The trainer calls its
hooks, in list order, like this::

    hook.before_train()
    for iter in range(start_iter, max_iter):
        hook.before_step()
        trainer.run_step()       # calls hook.after_backward() between backward and the update
        hook.after_step()
        if trainer.stopping: break
    hook.after_train()           # also after an exception; trainer.status is None then

A stop request ends the loop after the iteration it arrived in, on every rank. A single process
does not wait that long (an iteration takes a minute or more on a CPU): the stop hook makes the
next layer of the forward or backward pass (or of an evaluation) raise :class:`StopRequested`,
before the SGD step, so ``completed`` and the checkpoint are the last completed iteration.

One step follows Detectron2's SimpleTrainer/AMPTrainer: next batch (this rank's shard), loss
dict from ``forward_train``, the rank-averaged loss values, backward (scaled under mixed
precision; DDP averages the gradients), optional gradient clipping, SGD step, LR schedule step.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from cellseg.core.errors import CellsegError


class TrainingError(CellsegError):
    """Training cannot go on (diverged, nothing to train, ...)."""


class StopRequested(Exception):
    """A stop request arrived during a forward/backward pass (single-process runs)."""


class HookBase:
    """Something a run does around the iterations; every method is optional.

    ``self.trainer`` is set when the hook is given to a :class:`Trainer`. ``before_step`` should
    take negligible time (it is inside the iteration's timing); slow work goes in
    ``after_step``.
    """

    trainer: "Trainer"

    def before_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_backward(self) -> None:
        """Called after backward and before the weights change (``trainer.losses`` is set)."""

    def after_step(self) -> None:
        pass

    def after_train(self) -> None:
        """Called when the loop ends, by an exception too: ``trainer.status`` is None then."""


class TrainForward(nn.Module):
    """Wraps the model so DistributedDataParallel's forward is ``forward_train``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images, targets):
        return self.model.forward_train(images, targets)


class Trainer:
    """One rank's training loop over ``[start_iter, max_iter)``.

    Args:
        model: the detector (its ``forward_train(images, targets)`` gives the loss dict).
        loader: iterator of (images, targets) batches for this rank, already positioned at
            ``start_iter``.
        distributed: wrap the model in DistributedDataParallel and all-reduce the losses
            (``torch.distributed`` is initialised).
        clip: :func:`~cellseg.trainer.solver.gradient_clipper`'s result or None.
        amp: autocast the forward and scale the loss (CUDA only).

    State the hooks read: ``iter`` (the current or last iteration; ``start_iter - 1`` before
    the first), ``completed`` (the last iteration whose update ran), ``losses`` (name -> rank-averaged value of the last step), ``data_time`` and
    ``iter_time`` (seconds), ``stopping`` (some rank asked to stop during this step),
    ``status`` (None until the loop ends: "finished" or "stopped"), ``checkpoint`` (the last
    checkpoint this rank wrote) and ``final_eval``.
    """

    def __init__(self, model: nn.Module, loader, optimizer: torch.optim.Optimizer, scheduler,
                 scaler: torch.amp.GradScaler, clip, device: torch.device, start_iter: int,
                 max_iter: int, distributed: bool, world: int, amp: bool,
                 hooks: Sequence[HookBase] = ()):
        self.model = model
        self.net: nn.Module = TrainForward(model)
        if distributed:
            self.net = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[device.index] if device.type == "cuda" else None,
                broadcast_buffers=False)
        self.loader, self.optimizer, self.scheduler = loader, optimizer, scheduler
        self.scaler = scaler
        self.clip = clip
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.device, self.distributed, self.world, self.amp = device, distributed, world, amp
        self.start_iter, self.max_iter = start_iter, max_iter
        self.iter = self.completed = start_iter - 1
        self.losses: dict[str, float] = {}
        self.data_time = self.iter_time = 0.0
        self.stopping = False
        # this rank's stop request, asked right before the losses are all-reduced (the stop
        # hook installs its own); the answer travels in the same all-reduce
        self.stop_requested: Callable[[], bool] = lambda: False
        self.status: str | None = None
        self.checkpoint: Path | None = None
        self.final_eval: dict | None = None
        self.hooks = list(hooks)
        for h in self.hooks:
            h.trainer = self

    def train(self) -> None:
        """Run the iterations; ``status`` says how the loop ended."""
        try:
            self._call("before_train")
            for self.iter in range(self.start_iter, self.max_iter):
                self._call("before_step")
                self.run_step()
                self._call("after_step")
                if self.stopping:
                    break
            self.status = "stopped" if self.stopping else "finished"
        except StopRequested:
            self.stopping, self.status = True, "stopped"
        finally:
            self._call("after_train")

    def run_step(self) -> None:
        """One iteration: batch, forward, all-reduce, backward, ``after_backward``, update."""
        t0 = time.perf_counter()
        images, targets = next(self.loader)
        images, targets = _to_device(images, targets, self.device)
        self.data_time = time.perf_counter() - t0
        try:
            with torch.autocast(self.device.type, enabled=self.amp):
                loss_dict = self.net(images, targets)
        except FloatingPointError as exc:
            raise TrainingError(f"training diverged at iteration {self.iter}: {exc}; lower "
                                "SOLVER.BASE_LR or enable SOLVER.CLIP_GRADIENTS") from None
        names = sorted(loss_dict)
        losses = sum(loss_dict[k] for k in names)
        # rank-averaged loss values and the stop request in one small all-reduce
        flags = torch.tensor([float(self.stop_requested())], device=self.device)
        vals = torch.cat([torch.stack([loss_dict[k].detach().float() for k in names]), flags])
        if self.distributed:
            torch.distributed.all_reduce(vals)
            vals[:-1] /= self.world
        self.losses = dict(zip(names, vals[:-1].tolist()))
        self.stopping = vals[-1].item() > 0
        backward(losses, self.optimizer, self.scaler)
        self._call("after_backward")
        update(self.optimizer, self.scheduler, self.scaler, self.clip, self.params)
        self.completed = self.iter
        self.iter_time = time.perf_counter() - t0

    def _call(self, stage: str) -> None:
        for h in self.hooks:
            getattr(h, stage)()


def backward(losses: torch.Tensor, optimizer: torch.optim.Optimizer,
             scaler: torch.amp.GradScaler) -> None:
    """Zero the gradients and backpropagate the summed loss (scaled under mixed precision;
    DDP averages the gradients over the ranks here).

    Args:
        losses: scalar, the sum of the loss dict.
    """
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(losses).backward()


def update(optimizer: torch.optim.Optimizer, scheduler, scaler: torch.amp.GradScaler, clip,
           params: list[nn.Parameter]) -> None:
    """Apply the gradients in Detectron2's SimpleTrainer / AMPTrainer order: clip the unscaled
    gradients, SGD step, then the LR schedule's step.

    Args:
        clip: :func:`~cellseg.trainer.solver.gradient_clipper`'s result or None.
        params: the trainable parameters (what ``clip`` clips).
    """
    if clip is not None:
        scaler.unscale_(optimizer)
        clip(params)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()


def _to_device(images, targets, device):
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
    return images, targets


__all__ = ["HookBase", "Trainer", "TrainingError", "backward", "update"]
