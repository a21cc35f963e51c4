"""Trainer building blocks against independent references: sampling, RPN/Fast R-CNN/mask/point
losses (upstream's formulations), augmentations, LR schedule, clipping, non-strict loading,
COCO AP with dense images, sharded sampling and plots. All on real data or real models."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from torch.nn import functional as F
from torchvision.ops import roi_align

from cellseg.core.config import get_default_config, load_config
from cellseg.core.engine import losses
from cellseg.core.engine.meta_arch import build_model
from cellseg.core.errors import CheckpointError
from cellseg.core.structures import CroppedMasks, Instances
from cellseg.trainer.augment import AugmentSettings, augment, boxes_from_masks, resize_masks


@pytest.fixture(scope="module")
def nuclei(nuclei_dir):
    image = tifffile.imread(nuclei_dir / "img2d.tif")
    labels = tifffile.imread(nuclei_dir / "mask2d.tif")
    masks, _ = CroppedMasks.from_label_image(labels)
    return image, labels, masks


def model_of(fixtures_dir, name, weights=True):
    model = build_model(load_config(fixtures_dir / name / "config.yaml"))
    if weights:
        from cellseg.core.engine.checkpoint import load_weights

        load_weights(model, fixtures_dir / name / "model_final.pth")
    return model


# ------------------------------------------------------------------------------ sampling
def test_subsample_labels_balances_and_respects_ignore():
    torch.manual_seed(0)
    labels = torch.tensor([1] * 300 + [0] * 1000 + [-1] * 50)
    pos, neg = losses.subsample_labels(labels, 256, 0.5, 0)
    assert len(pos) == 128 and len(neg) == 128
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()
    assert len(set(pos.tolist())) == 128
    # too few positives: negatives fill the batch
    labels = torch.tensor([3] * 10 + [5] * 1000)  # 5 = background class
    pos, neg = losses.subsample_labels(labels, 512, 0.25, 5)
    assert len(pos) == 10 and len(neg) == 502


# ------------------------------------------------------------------------------ RPN
def test_rpn_losses_on_a_real_rpn(fixtures_dir, nuclei):
    """Zero objectness logits: every sampled anchor costs ln 2, and 256 anchors are sampled
    per image, so loss_rpn_cls is exactly ln 2 with upstream's normaliser."""
    torch.manual_seed(0)
    model = model_of(fixtures_dir, "mask_rcnn").train()
    rpn = model.proposal_generator
    _, _, masks = nuclei
    boxes = torch.as_tensor(masks.tight_boxes(), dtype=torch.float32)
    feats = [torch.zeros(2, 16, 512 // s, 512 // s) for s in (4, 8, 16, 32, 64)]
    anchors = rpn.anchor_generator(feats)
    n = sum(len(a) for a in anchors)
    logits = [torch.zeros(2, len(a), requires_grad=True) for a in anchors]
    deltas = [torch.zeros(2, len(a), 4, requires_grad=True) for a in anchors]
    targets = [{"boxes": boxes, "classes": torch.zeros(len(boxes), dtype=torch.int64)},
               {"boxes": torch.zeros((0, 4)), "classes": torch.zeros(0, dtype=torch.int64)}]
    out = losses.rpn_losses(rpn, anchors, logits, deltas, targets)
    assert out["loss_rpn_cls"].item() == pytest.approx(math.log(2), rel=1e-6)
    assert out["loss_rpn_loc"].item() > 0
    sum(out.values()).backward()
    g = torch.cat([lg.grad for lg in logits], dim=1)
    # image 2 has no objects: only negatives, gradient sigmoid(0) - 0 = 0.5 / normaliser
    assert (g[1] >= 0).all() and int((g[1] > 0).sum()) == 256
    # image 1: 256 sampled, at most half positive (gradient -0.5 / normaliser)
    assert int((g[0] != 0).sum()) == 256 and 0 < int((g[0] < 0).sum()) <= 128
    assert n == g.shape[1]
    # the loc loss only touches positive anchors of image 1
    gd = torch.cat([d.grad for d in deltas], dim=1)
    assert (gd[1] == 0).all() and int((gd[0].abs().sum(1) > 0).sum()) == int((g[0] < 0).sum())


# ------------------------------------------------------------------------------ ROI heads
def test_fast_rcnn_losses_pick_the_gt_class_deltas(fixtures_dir):
    model = model_of(fixtures_dir, "pointrend", weights=False)  # 4 classes, class-specific reg
    predictor = model.roi_heads.box_predictor
    assert predictor.bbox_pred.out_features == 16
    torch.manual_seed(0)
    props = torch.tensor([[10., 10., 50., 40.], [0., 0., 20., 20.], [30., 5., 60., 70.]])
    gt = torch.tensor([[12., 8., 55., 42.], [0., 0., 20., 20.], [28., 6., 66., 72.]])
    classes = torch.tensor([2, 4, 0])  # second is background (4 = num_classes)
    deltas = torch.randn(3, 4, 4) * 5  # garbage everywhere...
    exact = predictor.box2box_transform.get_deltas(props, gt)
    deltas[0, 2] = exact[0]  # ...except at the GT class of the foreground proposals
    deltas[2, 0] = exact[2]
    scores = torch.randn(3, 5)
    out = losses.fast_rcnn_losses(predictor, (scores, deltas.view(3, 16)), props, classes, gt)
    assert out["loss_box_reg"].item() == pytest.approx(0.0, abs=1e-5)
    assert out["loss_cls"].item() == pytest.approx(F.cross_entropy(scores, classes).item())
    deltas[0, 2] += 1.0  # L1 (beta 0): 4 coordinates off by 1 each, over 3 samples
    out = losses.fast_rcnn_losses(predictor, (scores, deltas.view(3, 16)), props, classes, gt)
    assert out["loss_box_reg"].item() == pytest.approx(4 / 3, rel=1e-4)


def test_mask_targets_equal_upstream_per_box_crop(nuclei):
    """Gathering the GT through ROIAlign's batch index = upstream's per-box mask copies."""
    _, _, masks = nuclei
    dense = torch.from_numpy(masks.to_dense())
    torch.manual_seed(1)
    idx = torch.randint(0, len(masks), (40,))
    gt_boxes = torch.as_tensor(masks.tight_boxes(), dtype=torch.float32)[idx]
    boxes = gt_boxes + torch.randn(40, 4) * 3  # jittered proposals around the GT
    ours = losses.mask_targets(dense, idx, boxes, 28)
    copies = dense[idx][:, None].float()
    rois = torch.cat([torch.arange(40, dtype=torch.float32)[:, None], boxes], 1)
    upstream = roi_align(copies, rois, (28, 28), 1.0, 0, aligned=True)[:, 0] >= 0.5
    assert torch.equal(ours, upstream)
    assert ours.float().mean() > 0.3  # the nuclei fill much of their boxes


def test_point_labels_equal_grid_sample(nuclei):
    _, _, masks = nuclei
    dense = torch.from_numpy(masks.to_dense()[:30])
    torch.manual_seed(2)
    idx = torch.randint(0, 30, (30,))
    pts = torch.rand(30, 50, 2) * 540 - 14  # some points outside the 512 px image
    ours = losses.sample_mask_points(dense, idx, pts)
    grid = 2.0 * pts / torch.tensor([512.0, 512.0]) - 1.0
    ref = F.grid_sample(dense[idx][:, None].float(), grid[:, :, None], align_corners=False)
    assert torch.allclose(ours, ref[:, 0, :, 0], atol=1e-5)
    assert (ours > 0.5).any() and (ours == 0).any()


def test_uncertain_points_prefer_the_boundary():
    torch.manual_seed(3)
    # coarse logits: a vertical edge at x = 0.5 (negative left, positive right), 2 classes
    x = torch.linspace(-1, 1, 7)
    coarse = torch.stack([x.expand(7, 7), -x.expand(7, 7)])[None].repeat(4, 1, 1, 1) * 10
    classes = torch.tensor([0, 1, 0, 1])
    pts = losses.uncertain_points_with_randomness(coarse, classes, 40, 3.0, 1.0)
    assert pts.shape == (4, 40, 2)
    assert (pts[..., 0] - 0.5).abs().mean() < 0.1  # all picked near the edge
    pts = losses.uncertain_points_with_randomness(coarse, classes, 40, 3.0, 0.0)
    assert (pts[..., 0] - 0.5).abs().mean() > 0.15  # uniform


def test_roi_heads_losses_standard_cascade_pointrend(fixtures_dir, nuclei):
    """Loss names as upstream, finite, and every trainable parameter of the heads gets a
    gradient (a head the loss missed would never train)."""
    image, _, masks = nuclei
    crop = masks  # the top-left 128 px of it hold ~15 nuclei
    from cellseg.core.io import to_model_input

    for name, expected in (
            ("mask_rcnn", {"loss_cls", "loss_box_reg", "loss_mask"}),
            ("cascade_gn_dconv", {f"loss_{k}_stage{s}" for k in ("cls", "box_reg")
                                  for s in range(3)} | {"loss_mask"}),
            ("pointrend", {"loss_cls", "loss_box_reg", "loss_mask", "loss_mask_point"})):
        torch.manual_seed(0)
        model = model_of(fixtures_dir, name).train()
        cfg = load_config(fixtures_dir / name / "config.yaml")
        k = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        x = torch.from_numpy(to_model_input(image, cfg.INPUT.FORMAT)[:128, :128].transpose(2, 0, 1).copy())
        dense = torch.from_numpy(crop.to_dense()[:, :128, :128])
        dense = dense[dense.flatten(1).any(1)]
        target = {"masks": dense, "boxes": boxes_from_masks(dense),
                  "classes": torch.arange(len(dense)) % k}
        out = model.forward_train([x], [target])
        assert set(out) == {"loss_rpn_cls", "loss_rpn_loc"} | expected, name
        assert all(torch.isfinite(v) for v in out.values())
        sum(out.values()).backward()
        no_grad = [n for n, p in model.roi_heads.named_parameters()
                   if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
        assert not no_grad, (name, no_grad)


# ------------------------------------------------------------------------------ augmentation
def _settings(**kw):
    base = dict(min_sizes=(512,), max_size=4000, sampling="choice", flip="none")
    base.update(kw)
    return AugmentSettings(**base)


def test_augment_identity_flip_and_exact_upscale(nuclei):
    image, _, masks = nuclei
    from cellseg.core.io import to_model_input

    im = to_model_input(image, "BGR")
    classes = np.arange(len(masks)) % 3
    rng = np.random.default_rng(0)
    x, t = augment(im, masks, classes, _settings(), rng)
    assert torch.equal(x, torch.from_numpy(im.transpose(2, 0, 1).copy()))
    assert torch.equal(t["masks"], torch.from_numpy(masks.to_dense()))
    assert np.array_equal(t["boxes"].numpy(), masks.tight_boxes().astype(np.float32))
    assert t["classes"].tolist() == classes.tolist()
    # vertical flip (probability 0.5: draw until it happens)
    while True:
        x2, t2 = augment(im, masks, classes, _settings(flip="vertical"), rng)
        if not torch.equal(x2, x):
            break
    assert torch.equal(x2, x.flip(1)) and torch.equal(t2["masks"], t["masks"].flip(1))
    # exact 2x upscale: masks become 2x2 blocks (nearest at pixel centres)
    _, t3 = augment(im, masks, classes, _settings(min_sizes=(1024,)), rng)
    assert torch.equal(t3["masks"], t["masks"].repeat_interleave(2, 1).repeat_interleave(2, 2))
    assert torch.equal(t3["boxes"], t["boxes"] * 2)


def test_mask_resize_matches_pillow_nearest(nuclei):
    """Pillow's NEAREST (upstream's rule for bitmasks) pixel for pixel, also at sizes where
    the source coordinate is an exact integer (512 -> 614: column 153 reads 128), which
    interpolate(mode="nearest-exact") rounds the other way (127)."""
    _, labels, masks = nuclei
    dense = torch.from_numpy(masks.to_dense()[:10])
    for h, w in ((301, 377), (614, 614), (384, 469), (100, 1001)):
        out = resize_masks(dense, h, w)
        for i in range(10):
            ref = np.asarray(Image.fromarray(dense[i].numpy().astype(np.uint8) * 255)
                             .resize((w, h), Image.NEAREST)) > 0
            assert np.array_equal(out[i].numpy(), ref), (h, w)
    from cellseg.trainer.augment import pillow_nearest_index

    ramp = torch.arange(512, dtype=torch.float32).view(1, 1, 1, 512)
    exact = F.interpolate(ramp, size=(1, 614), mode="nearest-exact").flatten().long()
    assert exact[153] == 127 and pillow_nearest_index(512, 614)[153] == 128


def test_annotation_boxes_follow_resize_and_flip(nuclei):
    """Upstream keeps the annotation's boxes through resize and flip (scaled, mirrored,
    clipped); only a crop makes it recompute them from the masks."""
    image, labels, _ = nuclei
    from cellseg.core.io import to_model_input

    im = to_model_input(image, "BGR")[:320]  # 320 x 512 -> 384 x 614: non-integer scales
    sub = CroppedMasks.from_label_image(labels[:320])[0]
    boxes = sub.tight_boxes().astype(np.float32)
    boxes[0] = [-3.0, 0.5, 20.25, 11.0]  # a box reaching out of the image is clipped
    rng = np.random.default_rng(0)
    classes = np.zeros(len(sub), np.int64)
    _x, t = augment(im, sub, classes, _settings(min_sizes=(384,)), rng, boxes=boxes)
    sx, sy = 614 / 512, 384 / 320
    expected = boxes.astype(np.float64) * [sx, sy, sx, sy]
    expected[0, 0] = 0.0
    assert np.allclose(t["boxes"].numpy(), expected.astype(np.float32), rtol=0, atol=1e-4)
    assert not torch.equal(t["boxes"], boxes_from_masks(t["masks"]))  # not recomputed
    while True:  # horizontal flip (probability 0.5)
        xf, tf = augment(im, sub, classes, _settings(min_sizes=(384,), flip="horizontal"),
                         rng, boxes=boxes)
        if not torch.equal(xf, _x):
            break
    flipped = t["boxes"].clone()
    flipped[:, [0, 2]] = 614 - t["boxes"][:, [2, 0]]
    assert torch.allclose(tf["boxes"], flipped, atol=1e-4)
    # with a crop, boxes are the tight boxes of the cropped masks
    s = _settings(min_sizes=(384,), crop_type="relative", crop_size=(0.8, 0.8))
    _, tc = augment(im, sub, classes, s, rng, boxes=boxes)
    assert torch.equal(tc["boxes"], boxes_from_masks(tc["masks"]))


def test_crop_and_range_sampling_keep_masks_consistent(nuclei):
    image, labels, masks = nuclei
    from cellseg.core.io import to_model_input

    im = to_model_input(image, "RGB")
    s = _settings(min_sizes=(200, 400), sampling="range", flip="horizontal",
                  crop_type="relative_range", crop_size=(0.5, 0.5))
    rng = np.random.default_rng(5)
    sizes = set()
    for _ in range(6):
        x, t = augment(im, masks, np.zeros(len(masks), np.int64), s, rng)
        h, w = x.shape[1:]
        sizes.add(min(h, w))
        assert 200 <= min(h, w) <= 400 and t["masks"].shape[1:] == (h, w)
        assert len(t["boxes"]) == len(t["masks"]) > 0
        assert t["masks"].flatten(1).any(1).all()  # instances cropped away are dropped
        assert torch.equal(boxes_from_masks(t["masks"]), t["boxes"])
        # bright nuclei stay under their masks: mean intensity inside > outside
        gray = x.float().mean(0)
        inside = t["masks"].any(0)
        assert gray[inside].mean() > 2 * gray[~inside].mean()
    assert len(sizes) > 1


def test_augment_settings_from_config_refuse_bad_values():
    from cellseg.core.errors import ConfigError

    cfg = get_default_config().clone()
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "relative_range"
    s = AugmentSettings.from_config(cfg)
    assert s.crop_type == "relative_range" and s.min_sizes == (800,)
    cfg.INPUT.CROP.TYPE = "blob"
    with pytest.raises(ConfigError, match="INPUT.CROP.TYPE"):
        AugmentSettings.from_config(cfg)


# ------------------------------------------------------------------------------ solver
def test_cell_default_schedule_and_param_groups(fixtures_dir):
    from cellseg.trainer.setup import build_config
    from cellseg.trainer.solver import build_optimizer, lr_multiplier

    cfg = build_config(fixtures_dir / "mask_rcnn" / "config.yaml")
    assert cfg.SOLVER.BASE_LR == 1e-4 and cfg.SOLVER.MAX_ITER == 20000
    assert list(cfg.INPUT.MIN_SIZE_TRAIN) == [400, 600, 800, 1000] and cfg.INPUT.CROP.ENABLED
    m = lr_multiplier(cfg)
    assert m(0) == pytest.approx(0.001)
    assert m(500) == pytest.approx(0.001 * 0.5 + 0.5)
    assert m(1000) == m(6999) == 1.0
    assert m(7000) == pytest.approx(0.1) and m(9000) == pytest.approx(0.01)
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupCosineLR"
    cfg.SOLVER.WARMUP_ITERS = 0
    m = lr_multiplier(cfg)
    assert m(0) == 1.0 and m(10000) == pytest.approx(0.5) and m(20000) == pytest.approx(0.0)

    cfg.SOLVER.BIAS_LR_FACTOR = 2.0
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.5
    model = model_of(fixtures_dir, "cascade_gn_dconv", weights=False)
    opt = build_optimizer(model, cfg)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    gn = model.roi_heads.box_head[0].conv1.norm
    assert isinstance(gn, torch.nn.GroupNorm)
    assert by_param[id(gn.weight)]["weight_decay"] == 0.5
    conv = model.roi_heads.box_predictor[0].cls_score
    assert by_param[id(conv.bias)]["lr"] == pytest.approx(2e-4)
    assert by_param[id(conv.weight)]["lr"] == pytest.approx(1e-4)
    # upstream's "bias" override reaches normalisation biases too (lr x BIAS_LR_FACTOR; their
    # weight decay stays WEIGHT_DECAY_NORM while WEIGHT_DECAY_BIAS is unset)
    assert by_param[id(gn.bias)]["lr"] == pytest.approx(2e-4)
    assert by_param[id(gn.bias)]["weight_decay"] == 0.5
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(by_param) == trainable


def test_gradient_clipping_per_parameter_and_full_model():
    from cellseg.trainer.solver import gradient_clipper

    cfg = get_default_config().clone()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    params = [torch.nn.Parameter(torch.zeros(10)) for _ in range(3)]
    for p, s in zip(params, (0.01, 10.0, 100.0)):
        p.grad = torch.full((10,), s)
    gradient_clipper(cfg)(params)
    norms = [p.grad.norm().item() for p in params]
    assert norms[0] == pytest.approx(0.01 * math.sqrt(10)) and norms[1] == pytest.approx(1, 1e-4)
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
    gradient_clipper(cfg)(params)
    assert max(p.grad.abs().max().item() for p in params) <= 1.0


# ------------------------------------------------------------------------------ checkpoints
def test_load_pretrained_reinitialises_only_class_layers(fixtures_dir):
    from cellseg.trainer.checkpointing import load_pretrained

    cfg = load_config(fixtures_dir / "cascade_gn_dconv" / "config.yaml").clone()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
    model = build_model(cfg)
    report = load_pretrained(model, fixtures_dir / "cascade_gn_dconv" / "model_final.pth")
    # class-agnostic box regression: only the classifiers and the mask predictor change shape
    assert sorted(report.reinitialised) == sorted(
        [f"roi_heads.box_predictor.{s}.cls_score.{p}" for s in range(3) for p in ("weight", "bias")]
        + ["roi_heads.mask_head.predictor.weight", "roi_heads.mask_head.predictor.bias"])
    assert not report.missing and not report.unexpected
    assert model.roi_heads.box_predictor[0].cls_score.out_features == 3
    with pytest.raises(CheckpointError, match="another architecture"):
        load_pretrained(build_model(load_config(fixtures_dir / "mask_rcnn" / "config.yaml")),
                        fixtures_dir / "cascade_gn_dconv" / "model_final.pth")


# ------------------------------------------------------------------------------ evaluation
def test_coco_ap_counts_every_nucleus(nuclei, tmp_path):
    """125 nuclei in one image: with COCO's default of 100 detections AP could not reach 100;
    the trainer's evaluation (maxDets 1000) gives exactly 100 for the GT itself."""
    from cellseg.core.coco.dataset import CocoImage
    from cellseg.core.coco.writer import write_coco
    from cellseg.trainer.data import load_source
    from cellseg.trainer.evaluation import coco_evaluate

    image, _, masks = nuclei
    assert len(masks) > 100
    tifffile.imwrite(tmp_path / "im.tif", image)
    inst = Instances((512, 512), masks.tight_boxes().astype(np.float32),
                     np.ones(len(masks), np.float32), np.zeros(len(masks), np.int64), masks)
    write_coco(tmp_path / "gt.json", [CocoImage(1, "im.tif", 512, 512)], ["nucleus"], [inst])
    source = load_source(tmp_path / "gt.json")
    pred = inst.replace(scores=np.linspace(1, 0.5, len(masks)).astype(np.float32))
    res = coco_evaluate(source, {1: pred}, max_dets=1000)
    assert res["segm"]["AP"] == pytest.approx(100) and res["bbox"]["AP"] == pytest.approx(100)
    assert res["segm"]["AP-nucleus"] == pytest.approx(100)
    capped = coco_evaluate(source, {1: pred}, max_dets=100)
    assert capped["segm"]["AP"] < 90
    # half the nuclei missing: recall 0.5
    half = coco_evaluate(source, {1: pred[np.arange(len(masks)) % 2 == 0]})
    assert 40 < half["segm"]["AP"] < 60


# ------------------------------------------------------------------------------ data, plots
def test_ranks_read_disjoint_shards_of_one_stream():
    from cellseg.trainer.data import training_sampler

    full = list(__import__("itertools").islice(training_sampler(7, 3, 0, 1), 28))
    r0 = list(__import__("itertools").islice(training_sampler(7, 3, 0, 2), 14))
    r1 = list(__import__("itertools").islice(training_sampler(7, 3, 1, 2), 14))
    assert full[0::2] == r0 and full[1::2] == r1
    assert sorted(full[:7]) == list(range(7))  # each epoch is a permutation
    resumed = list(__import__("itertools").islice(training_sampler(7, 3, 1, 2, start=5), 9))
    assert resumed == r1[5:]


def test_plots_from_metrics(tmp_path):
    from cellseg.trainer.plots import read_metrics, write_plots

    rows = [{"iteration": i, "total_loss": 3 - i / 10, "loss_cls": 1 / (i + 1), "lr": 1e-4,
             "time": 0.2, "data_time": 0.01, "peak_memory_mb": 800 + i} for i in range(20)]
    rows.append({"iteration": 19, "segm/AP": 12.5, "bbox/AP": 10.0, "segm/AP-nucleus": 12.5})
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"iteration": 20, "tot'  # torn
    (tmp_path / "metrics.json").write_text(text)
    assert len(read_metrics(tmp_path / "metrics.json")) == 21
    files = write_plots(tmp_path / "metrics.json", tmp_path / "plots")
    assert {f.name for f in files} == {"lr.png", "losses.png", "ap.png", "ap_per_category.png",
                                       "time.png", "memory.png"}
    img = np.asarray(Image.open(tmp_path / "plots" / "losses.png").convert("RGB"))
    assert img.shape[1] == 800 and (img != 255).any(axis=2).mean() > 0.01
