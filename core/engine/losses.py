"""Training losses and sampling of the engine's heads, following Detectron2's definitions.

They belong to the engine, as in Detectron2, where each head computes its own losses in
training mode; the trainer only sums them. The heads call in here from ``forward`` when
``self.training`` and targets are given:

* :func:`rpn_losses` from ``RPN.forward`` -- anchor matching (IoU bands, low-quality matches),
  balanced sampling of ``BATCH_SIZE_PER_IMAGE`` anchors per image with ``POSITIVE_FRACTION``
  positives, objectness BCE and box-regression loss, both normalised by
  ``batch_size_per_image * num_images`` (upstream's normaliser, not the sampled count).
* :func:`standard_roi_heads_losses` from ``StandardROIHeads.forward`` (and so from
  ``CascadeROIHeads`` and PointRend's heads, which inherit it): ground truth appended to the
  proposals, IoU matching, balanced sampling, Fast R-CNN classification and box losses, then
  the mask loss on the foreground samples -- Mask R-CNN's ``loss_mask`` or PointRend's coarse
  ``loss_mask`` plus ``loss_mask_point`` on points chosen by uncertainty with oversampling.
  Cascade heads re-match each stage's regressed boxes with that stage's IoU threshold and
  report ``loss_cls_stage{k}`` / ``loss_box_reg_stage{k}``.

Everything is vectorised over anchors, proposals and instances; the only Python loops run over
images of the batch and cascade stages.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.nn import functional as F
from torchvision.ops import complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss
from torchvision.ops import roi_align

from .box_ops import clip_boxes, nonempty, pairwise_iou
from .point_features import coords_in_image, point_sample, point_uncertainty


# ------------------------------------------------------------------------------ sampling
def subsample_labels(labels: torch.Tensor, num_samples: int, positive_fraction: float,
                     bg_label: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random foreground/background indices: at most ``num_samples * positive_fraction``
    positives (labels not -1 and not ``bg_label``), the rest of ``num_samples`` negatives."""
    positive = torch.nonzero((labels != -1) & (labels != bg_label), as_tuple=True)[0]
    negative = torch.nonzero(labels == bg_label, as_tuple=True)[0]
    num_pos = min(positive.numel(), int(num_samples * positive_fraction))
    num_neg = min(negative.numel(), num_samples - num_pos)
    perm_pos = torch.randperm(positive.numel(), device=positive.device)[:num_pos]
    perm_neg = torch.randperm(negative.numel(), device=negative.device)[:num_neg]
    return positive[perm_pos], negative[perm_neg]


# ------------------------------------------------------------------------------ box regression
def box_regression_loss(src_boxes: torch.Tensor, transform, pred_deltas: torch.Tensor,
                        gt_boxes: torch.Tensor, loss_type: str = "smooth_l1",
                        beta: float = 0.0) -> torch.Tensor:
    """Summed regression loss of ``pred_deltas`` (R, 4) on ``src_boxes`` towards ``gt_boxes``."""
    if loss_type == "smooth_l1":
        target = transform.get_deltas(src_boxes, gt_boxes)
        if beta < 1e-5:  # upstream treats a tiny beta as exact L1 (no quadratic zone)
            return F.l1_loss(pred_deltas, target, reduction="sum")
        return F.smooth_l1_loss(pred_deltas, target, beta=beta, reduction="sum")
    losses = {"giou": generalized_box_iou_loss, "diou": distance_box_iou_loss,
              "ciou": complete_box_iou_loss}
    if loss_type not in losses:
        raise ValueError(f"unsupported box regression loss {loss_type!r} "
                         "(expected smooth_l1, giou, diou or ciou)")
    pred = transform.apply_deltas(pred_deltas, src_boxes)
    return losses[loss_type](pred, gt_boxes, reduction="sum")


# ------------------------------------------------------------------------------ RPN
def rpn_losses(rpn, anchors: list[torch.Tensor], logits: list[torch.Tensor],
               deltas: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
    """``loss_rpn_cls`` and ``loss_rpn_loc`` (Detectron2's RPN.losses)."""
    all_anchors = torch.cat(anchors)  # (R, 4), levels concatenated like the predictions
    labels, matched_boxes = [], []
    for t in targets:
        gt = t["boxes"].to(all_anchors)
        matched, lab = rpn.anchor_matcher(pairwise_iou(gt, all_anchors))
        lab = lab.to(torch.int64)
        pos, neg = subsample_labels(lab, rpn.batch_size_per_image, rpn.positive_fraction, 0)
        lab = torch.full_like(lab, -1)
        lab[pos] = 1
        lab[neg] = 0
        labels.append(lab)
        matched_boxes.append(gt[matched] if len(gt) else torch.zeros_like(all_anchors))
    labels = torch.stack(labels)  # (N, R)
    pos_mask = labels == 1
    pred_deltas = torch.cat(deltas, dim=1)  # (N, R, 4)
    src = all_anchors.unsqueeze(0).expand_as(pred_deltas)[pos_mask]
    loc = box_regression_loss(src, rpn.box2box_transform, pred_deltas[pos_mask],
                              torch.stack(matched_boxes)[pos_mask], rpn.box_reg_loss_type,
                              rpn.smooth_l1_beta)
    valid = labels >= 0
    cls = F.binary_cross_entropy_with_logits(torch.cat(logits, dim=1)[valid],
                                             labels[valid].to(torch.float32), reduction="sum")
    normalizer = rpn.batch_size_per_image * len(targets)
    losses = {"loss_rpn_cls": cls / normalizer, "loss_rpn_loc": loc / normalizer}
    return {k: v * rpn.loss_weight.get(k, 1.0) for k, v in losses.items()}


# ------------------------------------------------------------------------------ ROI heads
def label_and_sample_proposals(heads, proposals: list[dict], targets: list[dict]) -> list[dict]:
    """Per image: append GT to the proposals, match, sample; returns per-image dicts with
    ``boxes`` (S, 4), ``gt_classes`` (S,) (``num_classes`` = background), ``gt_index`` (S,)
    (matched GT row, meaningful for foreground) and ``gt_boxes`` (S, 4)."""
    k = heads.num_classes
    out = []
    for p, t in zip(proposals, targets):
        gt_boxes = t["boxes"].to(p["boxes"])
        boxes = torch.cat([p["boxes"], gt_boxes]) if heads.proposal_append_gt else p["boxes"]
        matched, match_labels = heads.proposal_matcher(pairwise_iou(gt_boxes, boxes))
        if len(gt_boxes):
            classes = t["classes"].to(boxes.device)[matched]
            classes[match_labels == 0] = k
            classes[match_labels == -1] = -1
        else:
            classes = torch.full_like(matched, k)
        fg, bg = subsample_labels(classes, heads.batch_size_per_image, heads.positive_fraction, k)
        idx = torch.cat([fg, bg])
        sampled_gt = gt_boxes[matched[idx]] if len(gt_boxes) else boxes[idx]
        out.append({"boxes": boxes[idx], "gt_classes": classes[idx], "gt_index": matched[idx],
                    "gt_boxes": sampled_gt})
    return out


def match_and_label_boxes(matcher, num_classes: int, boxes: list[torch.Tensor],
                          targets: list[dict]) -> list[dict]:
    """A cascade stage's labels for all its boxes (no sampling), as upstream's
    ``_match_and_label_boxes``."""
    out = []
    for b, t in zip(boxes, targets):
        gt_boxes = t["boxes"].to(b)
        matched, labels = matcher(pairwise_iou(gt_boxes, b))
        if len(gt_boxes):
            classes = t["classes"].to(b.device)[matched]
            classes[labels == 0] = num_classes
            matched_boxes = gt_boxes[matched]
        else:
            classes = torch.full_like(matched, num_classes)
            matched_boxes = torch.zeros_like(b)
        out.append({"boxes": b, "gt_classes": classes, "gt_index": matched,
                    "gt_boxes": matched_boxes})
    return out


def fast_rcnn_losses(predictor, predictions, proposal_boxes: torch.Tensor,
                     gt_classes: torch.Tensor, gt_boxes: torch.Tensor) -> dict[str, torch.Tensor]:
    """``loss_cls`` (softmax or sigmoid CE, mean) and ``loss_box_reg`` (sum over foreground,
    divided by the number of sampled proposals), as FastRCNNOutputLayers.losses."""
    scores, deltas = predictions
    k = predictor.num_classes
    n = gt_classes.numel()
    if n == 0:
        loss_cls = scores.sum() * 0.0
    elif predictor.use_sigmoid_ce:
        target = F.one_hot(gt_classes.clamp(min=0), k + 1)[:, :k].to(scores.dtype)
        loss_cls = F.binary_cross_entropy_with_logits(scores[:, :-1], target,
                                                      reduction="sum") / n
    else:
        loss_cls = F.cross_entropy(scores, gt_classes, reduction="mean")
    fg = torch.nonzero((gt_classes >= 0) & (gt_classes < k), as_tuple=True)[0]
    if deltas.shape[1] == 4:  # class-agnostic regression
        fg_deltas = deltas[fg]
    else:
        fg_deltas = deltas.view(len(deltas), -1, 4)[fg, gt_classes[fg]]
    loss_box = box_regression_loss(proposal_boxes[fg], predictor.box2box_transform, fg_deltas,
                                   gt_boxes[fg], predictor.box_reg_loss_type,
                                   predictor.smooth_l1_beta) / max(n, 1.0)
    losses = {"loss_cls": loss_cls, "loss_box_reg": loss_box}
    return {name: v * predictor.loss_weight.get(name, 1.0) for name, v in losses.items()}


def predict_boxes_for_gt_classes(predictor, predictions, boxes: list[torch.Tensor],
                                 gt_classes: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each proposal regressed with the deltas of its GT class (background clamped to the last
    class), unclipped, as FastRCNNOutputLayers.predict_boxes_for_gt_classes."""
    _, deltas = predictions
    cat = torch.cat(boxes)
    pred = predictor.box2box_transform.apply_deltas(deltas, cat)
    k = pred.shape[1] // 4
    if k > 1:
        cls = torch.cat(gt_classes).clamp(0, k - 1)
        pred = pred.view(len(cat), k, 4)[torch.arange(len(cat), device=cat.device), cls]
    return list(pred.split([len(b) for b in boxes]))


def mask_targets(gt_masks: torch.Tensor, gt_index: torch.Tensor, boxes: torch.Tensor,
                 side: int) -> torch.Tensor:
    """Each box's GT mask cropped and resized to ``side`` x ``side`` (bool), as upstream's
    ``BitMasks.crop_and_resize``: aligned ROIAlign, one sample per bin, threshold 0.5.

    ``gt_masks`` (G, H, W) holds each GT once; ``gt_index`` picks the GT of each box through the
    ROI batch index, so the (R, H, W) per-box copy upstream makes is never built.
    """
    if len(boxes) == 0:
        return torch.zeros((0, side, side), dtype=torch.bool, device=boxes.device)
    rois = torch.cat([gt_index[:, None].to(boxes.dtype), boxes], dim=1)
    out = roi_align(gt_masks[:, None].to(torch.float32), rois.float(), (side, side), 1.0, 0,
                    aligned=True)
    return out[:, 0] >= 0.5


def mask_rcnn_loss(logits: torch.Tensor, classes: torch.Tensor,
                   targets: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel BCE of each instance's class channel (or the agnostic channel)."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0  # keeps the graph connected so DDP sees every parameter
    pred = logits[:, 0] if logits.shape[1] == 1 else logits[
        torch.arange(len(logits), device=logits.device), classes]
    return F.binary_cross_entropy_with_logits(pred, targets.to(pred.dtype), reduction="mean")


def sample_mask_points(gt_masks: torch.Tensor, gt_index: torch.Tensor,
                       points: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of GT masks at image-pixel points, zero outside the image.

    ``gt_masks`` (G, H, W) bool, ``gt_index`` (R,), ``points`` (R, P, 2) xy in pixels ->
    (R, P) floats. The same values as ``grid_sample(align_corners=False)`` on the float masks
    (upstream's ``point_sample``), gathered from the bool masks instead of R float copies.
    """
    g, h, w = gt_masks.shape
    x = points[..., 0] - 0.5  # pixel centres sit at integer + 0.5
    y = points[..., 1] - 0.5
    x0 = torch.floor(x)
    y0 = torch.floor(y)
    fx, fy = x - x0, y - y0
    x0, y0 = x0.to(torch.int64), y0.to(torch.int64)
    idx = gt_index[:, None].expand_as(x0)
    out = torch.zeros_like(x)
    for dy, dx, weight in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                           (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = y0 + dy, x0 + dx
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        val = gt_masks[idx, yy.clamp(0, h - 1), xx.clamp(0, w - 1)] & inside
        out = out + weight * val.to(out.dtype)
    return out


PointDraws = Callable[[int, int, torch.device], torch.Tensor]


def uniform_point_draws(num_rois: int, num_points: int, device: torch.device) -> torch.Tensor:
    """PointRend's own draws: independent uniform points per ROI, (R, P, 2) in [0, 1)."""
    return torch.rand(num_rois, num_points, 2, device=device)


def uncertain_points_with_randomness(coarse: torch.Tensor, classes: torch.Tensor,
                                     num_points: int, oversample_ratio: float,
                                     importance_sample_ratio: float,
                                     draws: PointDraws | None = None) -> torch.Tensor:
    """PointRend's training points in [0, 1]^2 box coordinates, (R, num_points, 2): draw
    ``num_points * oversample_ratio`` random points, keep the
    ``importance_sample_ratio * num_points`` most uncertain of them (coarse logit nearest 0),
    fill up with fresh uniform points.

    Args:
        coarse: (R, C, S, S) coarse mask logits.
        classes: (R,) class of each ROI (the channel whose uncertainty counts).
        draws: source of the uniform draws, called as (R, n, device) -> (R, n, 2); the
            default is ``torch.rand`` (upstream's ``get_uncertain_point_coords_with_randomness``).

    Returns:
        (R, num_points, 2) points, the most uncertain first.
    """
    draws = draws or uniform_point_draws
    r = coarse.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    coords = draws(r, num_sampled, coarse.device)
    uncertainty = point_uncertainty(point_sample(coarse, coords), classes)  # (R, 1, S)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    idx = torch.topk(uncertainty[:, 0, :], k=num_uncertain, dim=1)[1]
    coords = torch.gather(coords, 1, idx[..., None].expand(-1, -1, 2))
    if num_random > 0:
        coords = torch.cat([coords, draws(r, num_random, coarse.device)], dim=1)
    return coords


def _pointrend_mask_losses(head, features: dict, fg: list[dict], targets: list[dict]) -> dict:
    boxes = [f["boxes"] for f in fg]
    classes = torch.cat([f["gt_classes"] for f in fg])
    coarse = head.coarse_head(head.roi_features(features, boxes))
    side = coarse.shape[-1]
    tgt = torch.cat([mask_targets(t["masks"], f["gt_index"], f["boxes"], side)
                     for f, t in zip(fg, targets)])
    losses = {"loss_mask": mask_rcnn_loss(coarse, classes, tgt)}
    if not head.mask_point_on:
        return losses
    with torch.no_grad():
        coords = uncertain_points_with_randomness(coarse, classes, head.train_num_points,
                                                  head.oversample_ratio,
                                                  head.importance_sample_ratio,
                                                  getattr(head, "point_draws", None))
        in_image = coords_in_image(torch.cat(boxes), coords)
        counts = [len(b) for b in boxes]
        point_labels = torch.cat([
            sample_mask_points(t["masks"], f["gt_index"], pts)
            for f, t, pts in zip(fg, targets, in_image.split(counts))]) if len(classes) else \
            coords.new_zeros((0, head.train_num_points))
    logits = head.point_logits(features, boxes, coords, coarse)  # (R, C, P)
    if logits.shape[0] == 0:
        losses["loss_mask_point"] = logits.sum() * 0.0
    else:
        pred = logits[:, 0] if logits.shape[1] == 1 else logits[
            torch.arange(len(logits), device=logits.device), classes]
        losses["loss_mask_point"] = F.binary_cross_entropy_with_logits(
            pred, point_labels.to(pred.dtype), reduction="mean")
    return losses


def mask_branch_losses(heads, features: dict, sampled: list[dict], targets: list[dict]) -> dict:
    """The mask loss(es) on the foreground of the sampled proposals."""
    k = heads.num_classes
    fg = []
    for s in sampled:
        keep = (s["gt_classes"] >= 0) & (s["gt_classes"] < k)
        fg.append({key: s[key][keep] for key in ("boxes", "gt_classes", "gt_index")})
    if heads.mask_pooler is None:
        return _pointrend_mask_losses(heads.mask_head, features, fg, targets)
    boxes = [f["boxes"] for f in fg]
    x = heads.mask_pooler([features[f] for f in heads.mask_in_features], boxes)
    logits = heads.mask_head.layers(x)
    tgt = torch.cat([mask_targets(t["masks"], f["gt_index"], f["boxes"], logits.shape[-1])
                     for f, t in zip(fg, targets)])
    classes = torch.cat([f["gt_classes"] for f in fg])
    return {"loss_mask": mask_rcnn_loss(logits, classes, tgt) * heads.mask_head.loss_weight}


def standard_roi_heads_losses(heads, image_sizes, features: dict, proposals: list[dict],
                              targets: list[dict]) -> dict[str, torch.Tensor]:
    """Box (per stage for cascades) and mask losses of the ROI heads for one batch."""
    sampled = label_and_sample_proposals(heads, proposals, targets)
    losses: dict[str, torch.Tensor] = {}
    if hasattr(heads, "num_cascade_stages"):
        # stage 0 uses the sampled proposals with the labels sampling gave them (stage 0's
        # matcher is the sampling matcher); later stages re-match their regressed boxes
        stage = sampled
        for k in range(heads.num_cascade_stages):
            if k > 0:
                boxes = [clip_boxes(b.detach(), size) for b, size in zip(prev, image_sizes)]
                boxes = [b[nonempty(b)] for b in boxes]  # upstream drops empty boxes in training
                stage = match_and_label_boxes(heads.proposal_matchers[k], heads.num_classes,
                                              boxes, targets)
            boxes = [s["boxes"] for s in stage]
            predictor = heads.box_predictor[k]
            predictions = heads.run_stage(features, boxes, k)
            prev = predictor.predict_boxes(predictions, boxes)
            stage_losses = fast_rcnn_losses(predictor, predictions, torch.cat(boxes),
                                            torch.cat([s["gt_classes"] for s in stage]),
                                            torch.cat([s["gt_boxes"] for s in stage]))
            losses.update({f"{name}_stage{k}": v for name, v in stage_losses.items()})
    else:
        boxes = [s["boxes"] for s in sampled]
        predictions = heads.box_predictions(features, boxes)
        losses.update(fast_rcnn_losses(heads.box_predictor, predictions, torch.cat(boxes),
                                       torch.cat([s["gt_classes"] for s in sampled]),
                                       torch.cat([s["gt_boxes"] for s in sampled])))
        if heads.train_on_pred_boxes:
            # the mask branch then trains on the regressed boxes (upstream's
            # TRAIN_ON_PRED_BOXES; the cascade ignores it, as upstream's does)
            with torch.no_grad():
                pred = predict_boxes_for_gt_classes(heads.box_predictor, predictions, boxes,
                                                    [s["gt_classes"] for s in sampled])
            sampled = [{**s, "boxes": b} for s, b in zip(sampled, pred)]
    if heads.mask_on:
        losses.update(mask_branch_losses(heads, features, sampled, targets))
    return losses
