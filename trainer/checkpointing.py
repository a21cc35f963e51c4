"""Run-folder checkpoints in Detectron2's layout, and non-strict initialisation for fine-tuning.

A checkpoint is ``{"model": state_dict, "optimizer": ..., "scheduler": ..., "iteration": N}``
(plus ``grad_scaler`` with mixed precision), written atomically as ``model_{N:07d}.pth`` or
``model_final.pth``; the text file ``last_checkpoint`` names the newest one, as Detectron2's
``Checkpointer`` does, so ``--resume`` (ours or upstream's) continues from it. Every file holds
only tensors and plain containers and loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from cellseg.core.engine.c2_names import looks_like_caffe2
from cellseg.core.engine.checkpoint import (align_checkpoint, read_checkpoint, save_checkpoint,
                                            state_dict_of)
from cellseg.core.engine.layers import FrozenBatchNorm2d
from cellseg.core.errors import CheckpointError


@dataclass
class InitReport:
    """What a non-strict load did: loaded keys, and those left at their fresh initialisation."""

    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)  # shape differs (class count)
    missing: list[str] = field(default_factory=list)  # in the model, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the model
    renamed: dict[str, str] = field(default_factory=dict)  # model key -> checkpoint name
    identity_stats: list[str] = field(default_factory=list)  # FrozenBN stats a backbone lacks

    def lines(self) -> list[str]:
        out = [f"loaded {len(self.loaded)} tensors"]
        if self.renamed:
            examples = ", ".join(f"{c2} -> {key}" for key, c2 in list(self.renamed.items())[:3])
            out.append(f"matched {len(self.renamed)} checkpoint names to the model's by "
                       f"Detectron2's heuristics ({examples}, ...)")
        if self.reinitialised:
            out.append("re-initialised (shape differs from the checkpoint, e.g. another class "
                       "count): " + ", ".join(self.reinitialised))
        if self.identity_stats:
            out.append(f"{len(self.identity_stats)} FrozenBN running statistics set to the "
                       "identity (the checkpoint folds them into scale and bias)")
        if self.missing:
            out.append("not in the checkpoint, left at initialisation: " + _grouped(self.missing))
        if self.unexpected:
            out.append("ignored (not in this model): " + _grouped(self.unexpected))
        return out


def _grouped(names: list[str]) -> str:
    # "backbone.fpn_lateral2.{bias,weight}": hundreds of names stay readable in a log line
    groups: dict[str, list[str]] = {}
    for name in names:
        head, _, leaf = name.rpartition(".")
        groups.setdefault(head, []).append(leaf)
    parts = []
    for head, leaves in groups.items():
        if not head:  # Caffe2 blob names have no module path: listed one by one
            parts.extend(leaves)
        else:
            parts.append(f"{head}.{{{','.join(leaves)}}}" if len(leaves) > 1
                         else f"{head}.{leaves[0]}")
    return ", ".join(parts)


def load_pretrained(model: nn.Module, path: str | Path) -> InitReport:
    """Load every checkpoint tensor whose name and shape fit ``model``; report the rest.

    Fine-tuning a Detectron2 model on data with another class count leaves the class-specific
    layers (``box_predictor.cls_score``, class-specific ``bbox_pred``, the mask predictor,
    PointRend's coarse ``prediction`` and point ``predictor``) at their fresh initialisation.
    An ImageNet backbone (Caffe2 blob names, e.g. ``R-50.pkl``, ``X-152-32x8d-IN5k.pkl``) or a
    checkpoint asking for ``matching_heuristics`` is matched by Detectron2's name heuristics and
    fills the backbone only: FPN and heads keep their initialisation, as in Detectron2.
    A checkpoint that fills nothing of the backbone, or of whose tensors fewer than half fit,
    is refused: it is another architecture, not a training start.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"starting weights not found: {path}")
    ckpt = read_checkpoint(path)
    weights = state_dict_of(ckpt, path)
    own = model.state_dict()
    report = InitReport()
    usable = {}
    c2 = looks_like_caffe2(weights)
    if c2 or ckpt.get("matching_heuristics") is True:
        aligned = align_checkpoint(own, weights, path, c2_conversion=c2)
        usable = {k: v.to(own[k].dtype) for k, v in aligned.weights.items()}
        report.loaded = sorted(usable)
        # in the model's order, so the log's examples start at the stem
        report.renamed = {k: aligned.sources[k] for k in own
                          if k in aligned.sources and aligned.sources[k] != k}
        report.reinitialised = sorted(aligned.wrong_shape)
        report.unexpected = aligned.unmatched
        present = set(usable) | set(aligned.wrong_shape)
    else:
        for name, value in weights.items():
            if name not in own:
                if not name.endswith("num_batches_tracked"):
                    report.unexpected.append(name)
            elif tuple(value.shape) != tuple(own[name].shape):
                report.reinitialised.append(name)
            else:
                usable[name] = value.to(own[name].dtype)
                report.loaded.append(name)
        present = set(weights)
    missing = sorted(set(own) - present)
    # FrozenBN fills statistics a checkpoint lacks with the identity (as Detectron2's does)
    frozen = {f"{name}.{stat}" for name, m in model.named_modules()
              if isinstance(m, FrozenBatchNorm2d) for stat in ("running_mean", "running_var")}
    report.identity_stats = [k for k in missing if k in frozen]
    report.missing = [k for k in missing if k not in frozen]
    counted = [k for k in weights if not k.endswith("num_batches_tracked")]
    if len(usable) < 0.5 * len(counted) or not any(k.startswith("backbone.") for k in usable):
        raise CheckpointError(
            f"{path} fits only {len(usable)} of its {len(counted)} tensors into the model "
            f"({sum(k.startswith('backbone.') for k in usable)} of them in the backbone): it was "
            "trained for another architecture than the config describes")
    model.load_state_dict(usable, strict=False)
    return report


class RunCheckpointer:
    """Saves and restores the training state in a run folder (rank 0 saves, all ranks load)."""

    def __init__(self, output_dir: str | Path, model: nn.Module, optimizer=None, scheduler=None,
                 scaler=None):
        self.output_dir = Path(output_dir)
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler

    @property
    def last_checkpoint_file(self) -> Path:
        return self.output_dir / "last_checkpoint"

    def last_checkpoint(self) -> Path | None:
        f = self.last_checkpoint_file
        if not f.is_file():
            return None
        name = f.read_text(encoding="utf-8").strip()
        path = self.output_dir / name
        return path if name and path.is_file() else None

    def save(self, name: str, iteration: int) -> Path:
        extra = {"iteration": int(iteration)}
        if self.optimizer is not None:
            extra["optimizer"] = self.optimizer.state_dict()
        if self.scheduler is not None:
            extra["scheduler"] = _plain_scheduler_state(self.scheduler)
        if self.scaler is not None and self.scaler.is_enabled():
            extra["grad_scaler"] = self.scaler.state_dict()
        path = self.output_dir / f"{name}.pth"
        save_checkpoint(path, self.model, **extra)
        tmp = self.last_checkpoint_file.with_suffix(".tmp")
        tmp.write_text(path.name, encoding="utf-8")
        tmp.replace(self.last_checkpoint_file)  # atomic, after the checkpoint itself
        return path

    def resume(self) -> int:
        """Restore model, optimizer, scheduler (and scaler) from ``last_checkpoint``; returns the
        iteration to start at (saved iteration + 1), or 0 when there is nothing to resume."""
        path = self.last_checkpoint()
        if path is None:
            return 0
        ckpt = read_checkpoint(path)
        from cellseg.core.engine.checkpoint import check_state_dict

        weights = state_dict_of(ckpt, path)
        problems = check_state_dict(self.model, weights)
        if problems:
            raise CheckpointError(f"cannot resume from {path}: it does not fit the model built "
                                  f"from the config ({problems})")
        self.model.load_state_dict(weights, strict=True)
        if self.optimizer is not None and "optimizer" in ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and "scheduler" in ckpt:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and "grad_scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["grad_scaler"])
        if "iteration" not in ckpt:
            raise CheckpointError(f"cannot resume from {path}: it records no iteration")
        return int(ckpt["iteration"]) + 1


def _plain_scheduler_state(scheduler) -> dict:
    # LambdaLR stores its lambdas as None placeholders; everything else is plain numbers/lists
    return {k: v for k, v in scheduler.state_dict().items()}


__all__ = ["InitReport", "load_pretrained", "RunCheckpointer"]
