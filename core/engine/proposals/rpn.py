"""Region Proposal Network: head, proposal decoding and per-level top-k + NMS."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..box_ops import Box2BoxTransform, batched_nms, clip_boxes, nonempty
from ..layers import Conv2d
from ..losses import rpn_losses
from ..registry import ANCHOR_GENERATOR, PROPOSAL_GENERATOR, RPN_HEAD


class StandardRPNHead(nn.Module):
    """Shared 3x3 conv(s), then 1x1 convs for objectness logits and anchor deltas."""

    def __init__(self, in_channels: int, num_anchors: int, box_dim: int = 4, conv_dims=(-1,)):
        super().__init__()
        dims = [in_channels if d == -1 else d for d in conv_dims]
        if len(dims) == 1:
            self.conv = Conv2d(in_channels, dims[0], 3, padding=1, activation=nn.ReLU())
            nn.init.normal_(self.conv.weight, std=0.01)
            nn.init.constant_(self.conv.bias, 0)
        else:
            self.conv = nn.Sequential()
            prev = in_channels
            for k, d in enumerate(dims):
                layer = Conv2d(prev, d, 3, padding=1, activation=nn.ReLU())
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.constant_(layer.bias, 0)
                self.conv.add_module(f"conv{k}", layer)
                prev = d
        out = dims[-1]
        self.objectness_logits = nn.Conv2d(out, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(out, num_anchors * box_dim, 1)
        for layer in (self.objectness_logits, self.anchor_deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0)

    def forward(self, features: list[torch.Tensor]):
        logits, deltas = [], []
        for x in features:
            t = self.conv(x)
            logits.append(self.objectness_logits(t))
            deltas.append(self.anchor_deltas(t))
        return logits, deltas


@RPN_HEAD.register("StandardRPNHead")
def build_standard_rpn_head(cfg, input_shape, num_anchors: int, box_dim: int):
    channels = {s.channels for s in input_shape}
    if len(channels) != 1:
        raise ValueError("RPN input features must all have the same number of channels")
    return StandardRPNHead(channels.pop(), num_anchors, box_dim, cfg.MODEL.RPN.CONV_DIMS)


class RPN(nn.Module):
    def __init__(self, *, in_features, head, anchor_generator, box2box_transform,
                 pre_nms_topk: tuple[int, int], post_nms_topk: tuple[int, int], nms_thresh: float,
                 min_box_size: float, anchor_matcher=None, batch_size_per_image=256,
                 positive_fraction=0.5, loss_weight=None, smooth_l1_beta=0.0,
                 box_reg_loss_type="smooth_l1"):
        super().__init__()
        self.in_features = list(in_features)
        self.rpn_head = head
        self.anchor_generator = anchor_generator
        self.box2box_transform = box2box_transform
        self.pre_nms_topk = {True: pre_nms_topk[0], False: pre_nms_topk[1]}
        self.post_nms_topk = {True: post_nms_topk[0], False: post_nms_topk[1]}
        self.nms_thresh = nms_thresh
        self.min_box_size = float(min_box_size)
        # training-only settings (read by ..losses)
        self.anchor_matcher = anchor_matcher
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.loss_weight = loss_weight or {"loss_rpn_cls": 1.0, "loss_rpn_loc": 1.0}
        self.smooth_l1_beta = smooth_l1_beta
        self.box_reg_loss_type = box_reg_loss_type

    def forward(self, image_sizes, features: dict[str, torch.Tensor], gt_instances=None):
        feats = [features[f] for f in self.in_features]
        anchors = self.anchor_generator(feats)
        logits, deltas = self.rpn_head(feats)
        # (N, A, H, W) -> (N, H*W*A): position-major, anchor-minor, matching the anchors' order
        logits = [x.permute(0, 2, 3, 1).flatten(1) for x in logits]
        deltas = [x.view(x.shape[0], -1, 4, x.shape[-2], x.shape[-1])
                  .permute(0, 3, 4, 1, 2).flatten(1, -2) for x in deltas]
        losses = {}
        if self.training and gt_instances is not None:
            losses = rpn_losses(self, anchors, logits, deltas, gt_instances)
        proposals = self.predict_proposals(anchors, logits, deltas, image_sizes)
        return proposals, losses

    @torch.no_grad()
    def predict_proposals(self, anchors, logits, deltas, image_sizes):
        boxes = self._decode(anchors, deltas)
        return find_top_rpn_proposals(boxes, logits, image_sizes, self.nms_thresh,
                                      self.pre_nms_topk[self.training],
                                      self.post_nms_topk[self.training], self.min_box_size,
                                      self.training)

    def _decode(self, anchors, deltas):
        n = deltas[0].shape[0]
        out = []
        for anchors_i, deltas_i in zip(anchors, deltas):
            b = anchors_i.shape[1]
            d = deltas_i.reshape(-1, b)
            a = anchors_i.unsqueeze(0).expand(n, -1, -1).reshape(-1, b)
            out.append(self.box2box_transform.apply_deltas(d, a).view(n, -1, b))
        return out


def find_top_rpn_proposals(proposals, logits, image_sizes, nms_thresh, pre_nms_topk,
                           post_nms_topk, min_box_size, training):
    """Per level top-k, then per image: clip, drop tiny boxes, per-level NMS, top-k overall.

    Returns a list (per image) of dicts with ``boxes`` (R, 4) and ``objectness_logits`` (R,),
    sorted by objectness.
    """
    num_images = len(image_sizes)
    device = proposals[0].device
    top_scores, top_boxes, level_ids = [], [], []
    batch_idx = torch.arange(num_images, device=device)
    for level, (boxes_i, logits_i) in enumerate(zip(proposals, logits)):
        k = min(logits_i.shape[1], pre_nms_topk)
        scores_i, idx = logits_i.topk(k, dim=1)
        top_boxes.append(boxes_i[batch_idx[:, None], idx])
        top_scores.append(scores_i)
        level_ids.append(torch.full((k,), level, dtype=torch.int64, device=device))
    top_scores = torch.cat(top_scores, 1)
    top_boxes = torch.cat(top_boxes, 1)
    level_ids = torch.cat(level_ids)
    results = []
    for n, image_size in enumerate(image_sizes):
        boxes, scores, lvl = top_boxes[n], top_scores[n], level_ids
        valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
        if not valid.all():
            if training:
                raise FloatingPointError("RPN predicted Inf/NaN boxes or scores: training diverged")
            boxes, scores, lvl = boxes[valid], scores[valid], lvl[valid]
        boxes = clip_boxes(boxes, image_size)
        keep = nonempty(boxes, min_box_size)
        if not keep.all():
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
        keep = batched_nms(boxes, scores, lvl, nms_thresh)[:post_nms_topk]
        results.append({"boxes": boxes[keep], "objectness_logits": scores[keep]})
    return results


@PROPOSAL_GENERATOR.register("RPN")
def build_rpn(cfg, input_shape: dict):
    from ..matcher import Matcher

    r = cfg.MODEL.RPN
    shapes = [input_shape[f] for f in r.IN_FEATURES]
    anchor_gen = ANCHOR_GENERATOR.get(cfg.MODEL.ANCHOR_GENERATOR.NAME)(cfg, shapes)
    if len(set(anchor_gen.num_anchors)) != 1:
        raise ValueError("each feature level must have the same number of anchors")
    head = RPN_HEAD.get(r.HEAD_NAME)(cfg, shapes, anchor_gen.num_anchors[0], anchor_gen.box_dim)
    return RPN(
        in_features=r.IN_FEATURES, head=head, anchor_generator=anchor_gen,
        box2box_transform=Box2BoxTransform(r.BBOX_REG_WEIGHTS),
        pre_nms_topk=(r.PRE_NMS_TOPK_TRAIN, r.PRE_NMS_TOPK_TEST),
        post_nms_topk=(r.POST_NMS_TOPK_TRAIN, r.POST_NMS_TOPK_TEST),
        nms_thresh=r.NMS_THRESH, min_box_size=cfg.MODEL.PROPOSAL_GENERATOR.MIN_SIZE,
        anchor_matcher=Matcher(r.IOU_THRESHOLDS, r.IOU_LABELS, allow_low_quality_matches=True),
        batch_size_per_image=r.BATCH_SIZE_PER_IMAGE, positive_fraction=r.POSITIVE_FRACTION,
        loss_weight={"loss_rpn_cls": r.LOSS_WEIGHT,
                     "loss_rpn_loc": r.BBOX_REG_LOSS_WEIGHT * r.LOSS_WEIGHT},
        smooth_l1_beta=r.SMOOTH_L1_BETA, box_reg_loss_type=r.BBOX_REG_LOSS_TYPE,
    )
