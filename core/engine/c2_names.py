"""Caffe2/Detectron1 blob names -> Detectron2 parameter names, as Detectron2 maps them.

ImageNet backbones (``R-50.pkl``, ``X-101-32x8d.pkl``, ``X-152-32x8d-IN5k.pkl``) and Detectron1
detection models name their weights ``conv1_w``, ``res_conv1_bn_s``, ``res2_0_branch2a_w``...
Detectron2 loads them in two steps, reproduced here rule for rule so that every blob lands in the
same parameter as upstream's ``detectron2/checkpoint/c2_model_loading.py`` puts it:

1. :func:`convert_c2_detectron_names`: textual renaming (``_`` -> ``.``, ``_w/_b`` ->
   ``weight/bias``, ``_bn_s/_gn_s`` -> ``norm.weight``, ``branch2a`` -> ``conv1``, the stem,
   FPN/RPN/box/mask/keypoint heads), giving names relative to some sub-module;
2. :func:`align_to_model`: each model key takes the longest converted name that is a whole
   dotted suffix of it (``res2.0.conv1.weight`` -> ``backbone.bottom_up.res2.0.conv1.weight``);
   a shape that differs leaves the parameter at its initialisation.

A Caffe2 backbone holds folded BN scale/bias only (no running statistics), so FrozenBN's
``running_mean``/``running_var`` stay the identity; the ImageNet classifier (``fc1000_*``)
matches nothing and is left out.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

__all__ = ["Alignment", "align_to_model", "convert_basic_c2_names", "convert_c2_detectron_names",
           "looks_like_caffe2"]

_Rule = tuple[re.Pattern, str]


def _literal(old: str, new: str) -> _Rule:
    # upstream's str.replace: every occurrence, no pattern characters
    return re.compile(re.escape(old)), new.replace("\\", "\\\\")


def _regex(pattern: str, new: str) -> _Rule:
    # upstream's re.sub with its own pattern (unescaped dots included: "^body.conv.fcn")
    return re.compile(pattern), new


# Applied in this order to every name, after "_" -> "." (order matters: "bn.s" is matched once
# ".s" is no longer a "_s", and "^conv1." only after the stem's norm took "conv1.norm.").
_BASIC_RULES: tuple[_Rule, ...] = (
    _regex(r"\.b$", ".bias"),
    _regex(r"\.w$", ".weight"),
    # batch and group norm both become "norm"
    _regex(r"bn\.s$", "norm.weight"),
    _regex(r"bn\.bias$", "norm.bias"),
    _regex(r"bn\.rm", "norm.running_mean"),
    _regex(r"bn\.running.mean$", "norm.running_mean"),
    _regex(r"bn\.riv$", "norm.running_var"),
    _regex(r"bn\.running.var$", "norm.running_var"),
    _regex(r"bn\.gamma$", "norm.weight"),
    _regex(r"bn\.beta$", "norm.bias"),
    _regex(r"gn\.s$", "norm.weight"),
    _regex(r"gn\.bias$", "norm.bias"),
    # stem: anchored, so a head's "conv1" is not taken for the stem's
    _regex(r"^res\.conv1\.norm\.", "conv1.norm."),
    _regex(r"^conv1\.", "stem.conv1."),
    # bottleneck blocks (Detectron2 keeps Caffe2's res2..res5 stage names)
    _literal(".branch1.", ".shortcut."),
    _literal(".branch2a.", ".conv1."),
    _literal(".branch2b.", ".conv2."),
    _literal(".branch2c.", ".conv3."),
    # DensePose heads
    _regex(r"^body.conv.fcn", "body_conv_fcn"),
    _literal("AnnIndex.lowres", "ann_index_lowres"),
    _literal("Index.UV.lowres", "index_uv_lowres"),
    _literal("U.lowres", "u_lowres"),
    _literal("V.lowres", "v_lowres"),
)

_HEAD_RULES: tuple[_Rule, ...] = (
    # RPN: in FPN models the hidden conv is defined at level 2 ("fpn2") and shared
    _literal("conv.rpn.fpn2", "proposal_generator.rpn_head.conv"),
    _literal("conv.rpn", "proposal_generator.rpn_head.conv"),
    _literal("rpn.bbox.pred.fpn2", "proposal_generator.rpn_head.anchor_deltas"),
    _literal("rpn.cls.logits.fpn2", "proposal_generator.rpn_head.objectness_logits"),
    _literal("rpn.bbox.pred", "proposal_generator.rpn_head.anchor_deltas"),
    _literal("rpn.cls.logits", "proposal_generator.rpn_head.objectness_logits"),
    # Fast R-CNN box head (4conv1fc heads: head_conv1_w, head_conv1_gn_s)
    _regex(r"^bbox\.pred", "bbox_pred"),
    _regex(r"^cls\.score", "cls_score"),
    _regex(r"^fc6\.", "box_head.fc1."),
    _regex(r"^fc7\.", "box_head.fc2."),
    _regex(r"^head\.conv", "box_head.conv"),
)

_MASK_KEYPOINT_RULES: tuple[_Rule, ...] = (
    _literal(".[mask].fcn", "mask_head.mask_fcn"),  # StandardROIHeads
    _regex(r"^\.mask\.fcn", "mask_head.mask_fcn"),
    _literal("mask.fcn.logits", "mask_head.predictor"),
    _literal("conv5.mask", "mask_head.deconv"),  # Res5ROIHeads
    # the keypoint head's convs are plainly "conv_fcnX" in Caffe2
    _literal("conv.fcn", "roi_heads.keypoint_head.conv_fcn"),
    _literal("kps.score.lowres", "roi_heads.keypoint_head.score_lowres"),
    _literal("kps.score.", "roi_heads.keypoint_head.score."),
)

_HARD_CODED = {"pred_b": "linear_b", "pred_w": "linear_w"}


def _apply(rules: Iterable[_Rule], name: str) -> str:
    for pattern, new in rules:
        name = pattern.sub(new, name)
    return name


def convert_basic_c2_names(names: Iterable[str]) -> list[str]:
    """Rename typical backbone blobs (stem, bottleneck blocks, BN/GN) to Detectron2's names.

    Args:
        names: Caffe2 blob names, e.g. ``["conv1_w", "res2_0_branch2a_bn_s"]``.

    Returns:
        The renamed names in the same order, e.g. ``["stem.conv1.weight",
        "res2.0.conv1.norm.weight"]``.
    """
    return [_apply(_BASIC_RULES, _HARD_CODED.get(n, n).replace("_", ".")) for n in names]


def _fpn_name(name: str) -> str:
    # "fpn.inner.res2.2.sum.lateral.weight" -> "fpn_lateral2.weight" (lateral 1x1 convs);
    # "fpn.res2.2.sum.weight" -> "fpn_output2.weight" (3x3 output convs); ".norm" kept for GN
    parts = name.split(".")
    norm = ".norm" if "norm" in parts else ""
    if name.startswith("fpn.inner."):
        return f"fpn_lateral{int(parts[2][len('res'):])}{norm}.{parts[-1]}"
    if name.startswith("fpn.res"):
        return f"fpn_output{int(parts[1][len('res'):])}{norm}.{parts[-1]}"
    return name


def _convert_name(basic: str) -> str:
    return _apply(_MASK_KEYPOINT_RULES, _fpn_name(_apply(_HEAD_RULES, basic)))


def convert_c2_detectron_names(
    weights: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Rename Caffe2/Detectron1 weights to Detectron2 names (relative to some sub-module).

    Detectron1's class-specific predictors also change layout as upstream changes them: the
    background row of ``bbox_pred`` (4 rows) and of the mask predictor (1) is dropped, and
    ``cls_score``'s background row moves from first to last.

    Args:
        weights: ``{caffe2_name: tensor}``.

    Returns:
        ``({detectron2_name: tensor}, {detectron2_name: caffe2_name})``, in sorted Caffe2 order.

    Raises:
        ValueError: two blobs would get the same Detectron2 name.
    """
    original = sorted(weights)
    renamed = [_convert_name(n) for n in convert_basic_c2_names(original)]
    if len(set(renamed)) != len(renamed):
        seen: dict[str, str] = {}
        for old, new in zip(original, renamed):
            if new in seen:
                raise ValueError(f"Caffe2 blobs {seen[new]} and {old} both map to {new}")
            seen[new] = old
    new_weights, sources = {}, {}
    for old, new in zip(original, renamed):
        value = weights[old]
        if new.startswith("bbox_pred."):
            value = value[4:]
        elif new.startswith("mask_head.predictor."):
            value = value[1:]
        elif new.startswith("cls_score."):
            value = torch.cat([value[1:], value[:1]])
        new_weights[new] = value
        sources[new] = old
    return new_weights, sources


@dataclass
class Alignment:
    """Where each checkpoint tensor goes in the model (model keys, Caffe2 names for sources)."""

    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # model key -> tensor
    sources: dict[str, str] = field(default_factory=dict)  # model key -> checkpoint name
    wrong_shape: dict[str, str] = field(default_factory=dict)  # model key -> checkpoint name
    unmatched: list[str] = field(default_factory=list)  # checkpoint names matching no key


def align_to_model(model_state: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor],
                   c2_conversion: bool = True) -> Alignment:
    """Match checkpoint names to model keys by Detectron2's suffix heuristic.

    A checkpoint name matches a model key when it equals the key or is a whole dotted suffix of
    it (``conv1.weight`` matches ``backbone.bottom_up.stem.conv1.weight``, ``1.weight`` does not
    match ``...conv11.weight``); of several, the longest wins.

    Args:
        model_state: the model's ``state_dict()`` (only names and shapes are used).
        weights: the checkpoint's tensors; Caffe2 blob names when ``c2_conversion``.
        c2_conversion: rename with :func:`convert_c2_detectron_names` first.

    Returns:
        An :class:`Alignment`; ``sources``/``unmatched``/``wrong_shape`` name the original
        (Caffe2) blobs.

    Raises:
        ValueError: one checkpoint tensor would fill two model keys (ambiguous names).
    """
    if c2_conversion:
        weights, sources = convert_c2_detectron_names(weights)
    else:
        sources = {name: name for name in weights}
    result = Alignment()
    claimed: dict[str, str] = {}  # checkpoint name -> model key
    for key in sorted(model_state):
        # the dotted suffixes of the key, longest first: the first one present is the match
        parts = key.split(".")
        name = next((s for s in (".".join(parts[i:]) for i in range(len(parts))) if s in weights),
                    None)
        if name is None:
            continue
        if tuple(weights[name].shape) != tuple(model_state[key].shape):
            result.wrong_shape[key] = sources[name]
            continue
        if name in claimed:
            raise ValueError(f"checkpoint tensor {sources[name]} matches two model parameters "
                             f"({claimed[name]} and {key})")
        claimed[name] = key
        result.weights[key] = weights[name]
        result.sources[key] = sources[name]
    wrong = set(result.wrong_shape.values())
    result.unmatched = sorted(sources[n] for n in weights
                              if n not in claimed and sources[n] not in wrong)
    return result


def looks_like_caffe2(names: Iterable[str]) -> bool:
    """True when no name is a dotted module path (``conv1_w``, not ``stem.conv1.weight``)."""
    return not any("." in name for name in names)
