"""GeneralizedRCNN: normalise -> backbone -> proposals -> ROI heads -> original-size results."""
from __future__ import annotations

import torch
from torch import nn

from ..structures import Instances
from . import backbone as _backbone  # noqa: F401  (registers builders)
from . import proposals as _proposals  # noqa: F401
from . import roi_heads as _roi_heads  # noqa: F401
from .box_ops import clip_boxes, nonempty
from .layers import DeformConv
from .mask_paste import paste_masks
from .preprocess import batch_images
from .. import progress
from .registry import BACKBONE, META_ARCH, PROPOSAL_GENERATOR, ROI_HEADS


class GeneralizedRCNN(nn.Module):
    def __init__(self, *, backbone, proposal_generator, roi_heads, pixel_mean, pixel_std,
                 input_format: str = "BGR"):
        super().__init__()
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self.roi_heads = roi_heads
        self.input_format = input_format
        self.memory_format = torch.contiguous_format
        # not persistent: Detectron2 checkpoints do not carry them
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, images: list[torch.Tensor]):
        """(C, H, W) uint8/float tensors in INPUT.FORMAT order -> padded normalised batch."""
        normed = [(im.to(self.device) - self.pixel_mean) / self.pixel_std for im in images]
        batch, sizes = batch_images(normed, self.backbone.size_divisibility)
        return batch.contiguous(memory_format=self.memory_format), sizes

    def use_channels_last(self, enabled: bool | None = None) -> "GeneralizedRCNN":
        """NHWC layout: oneDNN/cuDNN convolutions run ~1.5x faster on it (inference).

        ``None`` chooses: NHWC unless the backbone has deformable convolutions. Their kernel
        works on NCHW, so NHWC would add a layout conversion around each of them, and NHWC's
        other summation order, amplified by the learnt offsets, doubles the distance to
        upstream's features (cascade fixture: 1.9e-5 instead of 8.7e-6 of the largest value).
        """
        if enabled is None:
            enabled = not any(isinstance(m, DeformConv) for m in self.backbone.modules())
        self.memory_format = torch.channels_last if enabled else torch.contiguous_format
        return self.to(memory_format=self.memory_format)

    def forward_detections(self, images: list[torch.Tensor], given_boxes=None) -> list[dict]:
        """Raw detections in the resized input frame (Detectron2's do_postprocess=False).

        With ``given_boxes`` (per image (R, 4) boxes and classes), skip proposals and the box
        head and only predict masks for those boxes (upstream's forward_with_given_boxes).
        """
        batch, sizes = self.preprocess(images)
        features = self.backbone(batch)
        progress.checkpoint(progress.BACKBONE)
        if given_boxes is not None:
            return self.masks_for_boxes(_for_pooling(features), given_boxes)
        proposals, _ = self.proposal_generator(sizes, features)
        progress.checkpoint(progress.PROPOSALS)
        dets, _ = self.roi_heads(sizes, _for_pooling(features), proposals)
        for d, size in zip(dets, sizes):
            d["image_size"] = size
        return dets

    def boxes_and_features(self, images: list[torch.Tensor]):
        """Box detections and the backbone features they came from (for a later mask pass)."""
        batch, sizes = self.preprocess(images)
        features = self.backbone(batch)
        progress.checkpoint(progress.BACKBONE)
        proposals, _ = self.proposal_generator(sizes, features)
        progress.checkpoint(progress.PROPOSALS)
        features = _for_pooling(features)
        return self.roi_heads.detect_boxes(sizes, features, proposals), features

    def masks_for_boxes(self, features: dict, given_boxes) -> list[dict]:
        """Mask predictions for given (boxes, classes, scores) per image on computed features."""
        dets = [{"boxes": b, "classes": c, "scores": s} for b, c, s in given_boxes]
        return self.roi_heads.predict_masks(features, dets)

    def forward_train(self, images: list[torch.Tensor], targets: list[dict]) -> dict:
        """Loss dict for a batch (targets in the resized frame); see cellseg.trainer."""
        batch, sizes = self.preprocess(images)
        features = self.backbone(batch)
        proposals, rpn_losses = self.proposal_generator(sizes, features, targets)
        _, head_losses = self.roi_heads(sizes, features, proposals, targets)
        return {**rpn_losses, **head_losses}


def _for_pooling(features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """NCHW copies of NHWC feature maps, made once for all ROI poolers.

    torchvision's roi_align makes its input contiguous on every call: the cascade's three box
    stages and the mask head would each copy every FPN level again.
    """
    return {k: v.contiguous() for k, v in features.items()}


def postprocess(det: dict, input_size: tuple[int, int], output_size: tuple[int, int],
                mask_threshold: float = 0.5) -> Instances:
    """Rescale to the original image, clip, drop empty boxes and paste masks (upstream rule)."""
    in_h, in_w = input_size
    out_h, out_w = output_size
    boxes = det["boxes"].clone()
    boxes[:, 0::2] *= out_w / in_w
    boxes[:, 1::2] *= out_h / in_h
    boxes = clip_boxes(boxes, output_size)
    keep = nonempty(boxes)
    boxes = boxes[keep]
    masks = mask_probs = None
    if "mask_probs" in det:
        probs = det["mask_probs"][keep]
        masks = paste_masks(probs, boxes, output_size, mask_threshold)
        mask_probs = probs[:, 0].to(torch.float16).cpu().numpy()
    return Instances(output_size, boxes.cpu().numpy(), det["scores"][keep].cpu().numpy(),
                     det["classes"][keep].cpu().numpy(), masks, mask_probs)


@META_ARCH.register("GeneralizedRCNN")
def build_generalized_rcnn(cfg):
    if cfg.MODEL.KEYPOINT_ON:
        raise ValueError("MODEL.KEYPOINT_ON: keypoint heads are not supported by this engine")
    if len(cfg.MODEL.PIXEL_MEAN) != len(cfg.MODEL.PIXEL_STD):
        raise ValueError("MODEL.PIXEL_MEAN and MODEL.PIXEL_STD must have the same length")
    backbone = BACKBONE.get(cfg.MODEL.BACKBONE.NAME)(cfg, len(cfg.MODEL.PIXEL_MEAN))
    shapes = backbone.output_shape()
    return GeneralizedRCNN(
        backbone=backbone,
        proposal_generator=PROPOSAL_GENERATOR.get(cfg.MODEL.PROPOSAL_GENERATOR.NAME)(cfg, shapes),
        roi_heads=ROI_HEADS.get(cfg.MODEL.ROI_HEADS.NAME)(cfg, shapes),
        pixel_mean=list(cfg.MODEL.PIXEL_MEAN), pixel_std=list(cfg.MODEL.PIXEL_STD),
        input_format=cfg.INPUT.FORMAT,
    )


def build_model(cfg) -> nn.Module:
    return META_ARCH.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
