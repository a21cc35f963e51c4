"""Optimizer, learning-rate schedule and gradient clipping as Detectron2's ``solver`` builds them.

* SGD with ``MOMENTUM``, ``NESTEROV`` and ``WEIGHT_DECAY``; normalisation parameters get
  ``WEIGHT_DECAY_NORM``, all biases (normalisation biases too, as upstream) ``BASE_LR *
  BIAS_LR_FACTOR`` and ``WEIGHT_DECAY_BIAS`` (when set).
* ``WarmupMultiStepLR`` (multiply by ``GAMMA`` at each of ``STEPS``) or ``WarmupCosineLR``
  (cosine from ``BASE_LR`` to ``BASE_LR_END`` over ``MAX_ITER``), both with a warm-up of
  ``WARMUP_ITERS`` from ``WARMUP_FACTOR`` (``WARMUP_METHOD`` linear or constant). Steps beyond
  ``MAX_ITER`` are ignored, as upstream does.
* ``CLIP_GRADIENTS``: ``value`` and ``norm`` clip each parameter's gradient separately
  (upstream's per-parameter clipping), ``full_model`` clips the norm of all gradients together.
"""
from __future__ import annotations

import bisect
import math
from typing import Callable

import torch
from torch import nn

from cellseg.core.errors import ConfigError

_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm,
               nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm,
               nn.LocalResponseNorm)


def param_groups(model: nn.Module, cfg) -> list[dict]:
    """One group per trainable parameter, as upstream's ``get_default_optimizer_params``:
    parameters of normalisation layers get ``WEIGHT_DECAY_NORM``; then every parameter named
    ``bias`` -- normalisation biases included, as upstream's name-keyed override does -- gets
    ``BASE_LR * BIAS_LR_FACTOR`` and, when set, ``WEIGHT_DECAY_BIAS``."""
    s = cfg.SOLVER
    base_lr, wd = float(s.BASE_LR), float(s.WEIGHT_DECAY)
    wd_norm = float(s.WEIGHT_DECAY_NORM)
    wd_bias = None if s.WEIGHT_DECAY_BIAS is None else float(s.WEIGHT_DECAY_BIAS)
    bias_lr = base_lr * float(s.BIAS_LR_FACTOR)
    groups, seen = [], set()
    for module in model.modules():
        is_norm = isinstance(module, _NORM_TYPES) or type(module).__name__.endswith("LayerNorm")
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            lr, decay = base_lr, wd
            if is_norm:
                decay = wd_norm
            if name == "bias":
                lr = bias_lr
                if wd_bias is not None:
                    decay = wd_bias
            groups.append({"params": [p], "lr": lr, "weight_decay": decay})
    return _merge_groups(groups)


def _merge_groups(groups: list[dict]) -> list[dict]:
    """One group per (lr, weight decay) pair: fewer groups, same optimisation."""
    merged: dict[tuple, dict] = {}
    for g in groups:
        key = (g["lr"], g["weight_decay"])
        merged.setdefault(key, {"params": [], "lr": g["lr"], "weight_decay": g["weight_decay"]})
        merged[key]["params"].extend(g["params"])
    return list(merged.values())


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    s = cfg.SOLVER
    groups = param_groups(model, cfg)
    if not groups:
        raise ConfigError("the model has no trainable parameters (MODEL.BACKBONE.FREEZE_AT and "
                          "the checkpoint leave nothing to train)")
    return torch.optim.SGD(groups, lr=float(s.BASE_LR), momentum=float(s.MOMENTUM),
                           nesterov=bool(s.NESTEROV), weight_decay=float(s.WEIGHT_DECAY))


def lr_multiplier(cfg) -> Callable[[int], float]:
    """Iteration -> factor on each group's base learning rate."""
    s = cfg.SOLVER
    max_iter = int(s.MAX_ITER)
    warmup_iters = int(s.WARMUP_ITERS)
    warmup_factor = float(s.WARMUP_FACTOR)
    method = s.WARMUP_METHOD
    if method not in ("linear", "constant"):
        raise ConfigError(f"SOLVER.WARMUP_METHOD: expected linear or constant, got {method!r}")
    name = s.LR_SCHEDULER_NAME
    if name == "WarmupMultiStepLR":
        steps = sorted(int(x) for x in s.STEPS if int(x) <= max_iter)
        gamma = float(s.GAMMA)

        def base(it: int) -> float:
            return gamma ** bisect.bisect_right(steps, it)
    elif name == "WarmupCosineLR":
        end = float(s.BASE_LR_END) / float(s.BASE_LR) if float(s.BASE_LR) else 0.0

        def base(it: int) -> float:
            return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * min(it, max_iter) / max_iter))
    else:
        raise ConfigError(f"SOLVER.LR_SCHEDULER_NAME: {name!r} is not supported (expected "
                          "WarmupMultiStepLR or WarmupCosineLR)")

    def multiplier(it: int) -> float:
        value = base(it)
        if it < warmup_iters:
            if method == "constant":
                value *= warmup_factor
            else:
                alpha = it / warmup_iters
                value *= warmup_factor * (1 - alpha) + alpha
        return value

    return multiplier


def build_lr_scheduler(optimizer, cfg) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR stepped once per iteration; its state (``last_epoch`` = iterations done) is
    what a checkpoint restores."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(cfg))


def gradient_clipper(cfg) -> Callable[[list[torch.nn.Parameter]], None] | None:
    c = cfg.SOLVER.CLIP_GRADIENTS
    if not c.ENABLED:
        return None
    value, norm_type = float(c.CLIP_VALUE), float(c.NORM_TYPE)
    if c.CLIP_TYPE == "value":
        def clip(params):
            for p in params:
                torch.nn.utils.clip_grad_value_(p, value)
    elif c.CLIP_TYPE == "norm":
        def clip(params):
            for p in params:
                torch.nn.utils.clip_grad_norm_(p, value, norm_type)
    elif c.CLIP_TYPE == "full_model":
        def clip(params):
            torch.nn.utils.clip_grad_norm_(list(params), value, norm_type)
    else:
        raise ConfigError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE: expected value, norm or full_model, "
                          f"got {c.CLIP_TYPE!r}")
    return clip
