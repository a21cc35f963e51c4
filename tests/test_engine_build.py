"""Model construction: parameter names/shapes as upstream, deform conv gradients, config checks."""
from __future__ import annotations

import json

import pytest
import torch

from cellseg.core.config import load_config
from cellseg.core.engine.layers import DeformConv, FrozenBatchNorm2d
from cellseg.core.engine.meta_arch import build_model
from cellseg.core.errors import ConfigError

FULL_SIZE = ["cascade_mask_rcnn_X_152_32x8d_FPN_IN5k_gn_dconv",
             "pointrend_rcnn_X_101_32x8d_FPN_3x_coco"]


def _shapes(model) -> dict:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", FULL_SIZE)
def test_full_size_models_have_upstream_parameter_names_and_shapes(fixtures_dir, name):
    model = build_model(load_config(fixtures_dir / f"{name}.config.yaml"))
    expected = json.loads((fixtures_dir / f"{name}.params.json").read_text())
    assert _shapes(model) == expected


@pytest.mark.parametrize("name", ["mask_rcnn", "cascade_gn_dconv", "pointrend"])
def test_fixture_models_have_upstream_parameter_names_and_shapes(fixtures_dir, name):
    model = build_model(load_config(fixtures_dir / name / "config.yaml"))
    assert _shapes(model) == json.loads((fixtures_dir / name / "params.json").read_text())


@pytest.mark.parametrize("modulated", [False, True], ids=["dcn-v1", "dcn-v2"])
def test_deformable_conv_gradients_on_cpu(modulated):
    torch.manual_seed(0)
    # small enough for finite differences to be quick, with 2 groups and 2 deformable groups
    conv = DeformConv(2, 2, 3, padding=1, groups=2, deformable_groups=2, bias=True,
                      modulated=modulated).double()
    x = torch.randn(1, 2, 3, 3, dtype=torch.double, requires_grad=True)
    # offsets away from integer positions: bilinear sampling is not differentiable at the grid
    offset = (torch.rand(1, 2 * 2 * 9, 3, 3, dtype=torch.double) * 0.8 + 0.1).requires_grad_()
    mask = torch.rand(1, 2 * 9, 3, 3, dtype=torch.double, requires_grad=True) if modulated else None
    inputs = (x, offset, mask) if modulated else (x, offset)
    assert torch.autograd.gradcheck(lambda *a: conv(*a), inputs, eps=1e-6, atol=1e-4)
    out = conv(*inputs)
    out.sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_zero_offsets_make_deform_conv_a_plain_conv():
    torch.manual_seed(1)
    conv = DeformConv(3, 5, 3, padding=1)
    x = torch.randn(2, 3, 8, 8)
    plain = torch.nn.functional.conv2d(x, conv.weight, padding=1)
    assert torch.allclose(conv(x, torch.zeros(2, 18, 8, 8)), plain, atol=1e-5)


def test_frozen_batchnorm_uses_its_statistics():
    bn = FrozenBatchNorm2d(2)
    bn.running_mean.copy_(torch.tensor([1.0, -2.0]))
    bn.running_var.copy_(torch.tensor([4.0, 0.25]))
    bn.weight.copy_(torch.tensor([2.0, 1.0]))
    x = torch.ones(1, 2, 1, 1)
    expected = torch.tensor([2.0 * (1 - 1) / (4 + 1e-5) ** 0.5, (1 + 2) / (0.25 + 1e-5) ** 0.5])
    assert torch.allclose(bn(x).flatten(), expected, atol=1e-5)


def test_pointrend_coarse_head_rejects_conv_dim_above_fpn_channels(fixtures_dir):
    cfg = load_config(fixtures_dir / "pointrend" / "config.yaml",
                      ["MODEL.ROI_MASK_HEAD.CONV_DIM", "128"])  # FPN has 64 channels
    with pytest.raises(ValueError, match="CONV_DIM"):
        build_model(cfg)


def test_unknown_registry_name_is_a_config_error(fixtures_dir):
    cfg = load_config(fixtures_dir / "mask_rcnn" / "config.yaml",
                      ["MODEL.ROI_HEADS.NAME", "NoSuchHeads"])
    with pytest.raises(ConfigError, match="NoSuchHeads"):
        build_model(cfg)
