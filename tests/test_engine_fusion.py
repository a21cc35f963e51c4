"""The engine's inference-only fast paths compute what the plain layers compute.

FrozenBN folded into conv weights, ReLU / residual sum run as oneDNN post-ops, the automatic
memory layout, the PointRend point head on points-major rows: each against the unfused
reference arithmetic (the path training takes), on real layer shapes.
"""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from cellseg.core.config import load_config
from cellseg.core.engine import layers
from cellseg.core.engine.layers import Conv2d, FrozenBatchNorm2d
from cellseg.core.engine.meta_arch import build_model
from cellseg.core.engine.roi_heads.pointrend import StandardPointHead


def _frozen_bn(channels: int, gen: torch.Generator) -> FrozenBatchNorm2d:
    bn = FrozenBatchNorm2d(channels)
    bn.weight.copy_(torch.rand(channels, generator=gen) + 0.5)
    bn.bias.copy_(torch.randn(channels, generator=gen))
    bn.running_mean.copy_(torch.randn(channels, generator=gen))
    bn.running_var.copy_(torch.rand(channels, generator=gen) + 0.1)
    return bn


def _reference(conv: Conv2d, x, residual=None, relu=False):
    """Upstream's order of operations: conv, frozen affine, (+ residual), ReLU."""
    y = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    scale, shift = conv.norm.scale_shift()
    y = y * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
    if residual is not None:
        y = y + residual
    return F.relu(y) if relu else y


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last],
                         ids=["nchw", "nhwc"])
@pytest.mark.parametrize("fusion", [True, False], ids=["onednn", "folded-only"])
def test_folded_and_fused_conv_matches_upstream_order(memory_format, fusion, monkeypatch):
    if fusion and not layers._ONEDNN_FUSION:
        pytest.skip("this PyTorch build has no oneDNN fused convolution kernels")
    monkeypatch.setattr(layers, "_ONEDNN_FUSION", fusion)
    gen = torch.Generator().manual_seed(0)
    conv = Conv2d(32, 64, 3, stride=2, padding=1, groups=4, bias=False,
                  norm=_frozen_bn(64, gen)).to(memory_format=memory_format)
    x = torch.randn(2, 32, 40, 56, generator=gen).contiguous(memory_format=memory_format)
    res = torch.randn(2, 64, 20, 28, generator=gen).contiguous(memory_format=memory_format)
    with torch.inference_mode():
        plain, relu, add_relu = conv(x), conv.forward_relu(x), conv.forward_add_relu(x, res)
    for got, want in ((plain, _reference(conv, x)), (relu, _reference(conv, x, relu=True)),
                      (add_relu, _reference(conv, x, res, relu=True))):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    assert (add_relu >= 0).all() and (add_relu == 0).any()  # the ReLU did run


def test_training_path_is_unchanged_and_differentiable():
    """With autograd on nothing is folded: the norm module runs and gradients flow."""
    gen = torch.Generator().manual_seed(1)
    conv = Conv2d(8, 16, 1, bias=False, norm=_frozen_bn(16, gen))
    x = torch.randn(1, 8, 6, 6, generator=gen)
    out = conv.forward_add_relu(x, torch.randn(1, 16, 6, 6, generator=gen))
    out.sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_layout_is_nchw_for_deformable_backbones_and_nhwc_otherwise(fixtures_dir):
    deform = build_model(load_config(fixtures_dir / "cascade_gn_dconv" / "config.yaml"))
    plain = build_model(load_config(fixtures_dir / "mask_rcnn" / "config.yaml"))
    assert deform.use_channels_last().memory_format == torch.contiguous_format
    assert plain.use_channels_last().memory_format == torch.channels_last
    assert plain.backbone.bottom_up.stem.conv1.weight.is_contiguous(
        memory_format=torch.channels_last)
    assert plain.use_channels_last(False).memory_format == torch.contiguous_format


def test_point_head_points_major_equals_upstream_layout():
    """forward (upstream's (R, C, P) contract) and forward_points agree with a Conv1d stack."""
    torch.manual_seed(0)
    head = StandardPointHead(48, num_classes=4, fc_dim=32, num_fc=3, cls_agnostic=False,
                             coarse_pred_each_layer=True).eval()
    fine, coarse = torch.randn(5, 48, 30), torch.randn(5, 4, 30)
    x = torch.cat([fine, coarse], 1)
    for layer in head.fc_layers:  # upstream StandardPointHead.forward, verbatim arithmetic
        x = torch.cat([F.relu(layer(x)), coarse], 1)
    want = head.predictor(x)
    with torch.inference_mode():
        got = head(fine, coarse)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
