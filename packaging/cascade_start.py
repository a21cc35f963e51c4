"""Starting weights for the demo cascade: the fixture's heads, narrowed, on another model's backbone.

    .venv/bin/python packaging/cascade_start.py CASCADE.pth OUT.pth [--fc-dim 128]
        [--backbone-from MODEL.pth]

The cascade fixture (5.8 M parameters) is 11.1 MiB in half precision, over the demo models'
10 MB budget; half of it is the three stages' ``fc1`` layers (64*7*7 -> 256). With
``MODEL.ROI_BOX_HEAD.FC_DIM 128`` the model has 4.6 M parameters (8.8 MiB). To keep what the
fixture learned, each stage keeps the ``fc-dim`` hidden units that matter most (largest
||incoming weights|| * ||outgoing weights||) with their rows of ``fc1`` and their columns of the
stage's ``cls_score`` and ``bbox_pred``; everything else is copied unchanged.

``--backbone-from``: take the ResNet, FPN and RPN (``backbone.*``, ``proposal_generator.*``)
from another checkpoint with the same names and shapes, e.g. the demo PointRend's (the fixtures
share the ResNet layout; the cascade's RPN barely learns from the cascade fixture's own
backbone). The cascade's deformable convolutions keep that backbone's weights and get zero
offsets (``conv2_offset``), so they start as the plain convolutions they replace. Use that
model's ``MODEL.PIXEL_MEAN``/``PIXEL_STD`` in the training config: its backbone was trained
with them.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch


def narrow(state: dict[str, torch.Tensor], fc_dim: int) -> dict[str, torch.Tensor]:
    """Return ``state`` with every cascade stage's box-head FC width cut to ``fc_dim``.

    Args:
        state: Detectron2 state dict of a CascadeROIHeads model with ``NUM_FC: 1``.
        fc_dim: hidden units to keep per stage (<= the current width).

    Returns:
        A new state dict; ``roi_heads.box_head.S.fc1.weight`` becomes (fc_dim, in),
        ``...fc1.bias`` (fc_dim,), ``roi_heads.box_predictor.S.{cls_score,bbox_pred}.weight``
        (out, fc_dim).
    """
    out = dict(state)
    stages = sorted({m.group(1) for k in state
                     if (m := re.fullmatch(r"roi_heads\.box_head\.(\d+)\.fc1\.weight", k))})
    if not stages:
        raise SystemExit("no roi_heads.box_head.S.fc1.weight: not a cascade with one FC layer")
    for s in stages:
        w = state[f"roi_heads.box_head.{s}.fc1.weight"].float()
        heads = [f"roi_heads.box_predictor.{s}.{h}.weight" for h in ("cls_score", "bbox_pred")]
        outgoing = torch.cat([state[h].float() for h in heads], dim=0)
        keep = torch.argsort(w.norm(dim=1) * outgoing.norm(dim=0), descending=True)[:fc_dim]
        keep = keep.sort().values
        for name in (f"roi_heads.box_head.{s}.fc1.weight", f"roi_heads.box_head.{s}.fc1.bias"):
            out[name] = state[name][keep].clone()
        for h in heads:
            out[h] = state[h][:, keep].clone()
    return out


def transplant_backbone(state: dict[str, torch.Tensor], donor: dict[str, torch.Tensor]
                        ) -> dict[str, torch.Tensor]:
    """``state`` with every backbone/RPN tensor taken from ``donor`` and zero deform offsets.

    Args:
        state: cascade state dict (deformable ``conv2`` with ``conv2_offset`` in res3-res5).
        donor: state dict of a model with the same ResNet/FPN/RPN (plain ``conv2``).

    Returns:
        A new state dict. Raises SystemExit naming a tensor the donor lacks or shapes otherwise.
    """
    out = dict(state)
    for name, value in state.items():
        if not name.startswith(("backbone.", "proposal_generator.")):
            continue
        if ".conv2_offset." in name:
            out[name] = torch.zeros_like(value)
        elif name not in donor or donor[name].shape != value.shape:
            raise SystemExit(f"the backbone donor has no tensor {name} of shape "
                             f"{tuple(value.shape)}")
        else:
            out[name] = donor[name].to(value.dtype).clone()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--fc-dim", type=int, default=128)
    p.add_argument("--backbone-from", type=Path)
    args = p.parse_args(argv)
    from cellseg.core.engine.checkpoint import read_checkpoint, state_dict_of

    state = narrow(state_dict_of(read_checkpoint(args.src)), args.fc_dim)
    if args.backbone_from:
        state = transplant_backbone(state, state_dict_of(read_checkpoint(args.backbone_from)))
    torch.save({"model": state}, args.dst)
    n = sum(v.numel() for v in state.values() if v.is_floating_point())
    print(f"wrote {args.dst}: {n / 1e6:.2f} M parameters, {2 * n / 2**20:.1f} MiB in half precision")
    return 0


if __name__ == "__main__":
    sys.exit(main())
