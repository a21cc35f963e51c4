"""Building blocks with Detectron2's parameter names: conv+norm wrapper, norms, deform conv."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import deform_conv2d

from .deform_conv import deform_conv2d as cpu_deform_conv2d


@dataclass(frozen=True)
class ShapeSpec:
    channels: int | None = None
    height: int | None = None
    width: int | None = None
    stride: int | None = None


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters, all stored as buffers.

    Checkpoints carry ``weight``, ``bias``, ``running_mean``, ``running_var`` buffers.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Folding into scale/shift (as upstream does) keeps the numerics identical to upstream.
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        bias = self.bias - self.running_mean * scale
        scale = scale.reshape(1, -1, 1, 1).to(x.dtype)
        bias = bias.reshape(1, -1, 1, 1).to(x.dtype)
        if torch.is_inference_mode_enabled():  # same arithmetic, no temporaries
            return x.mul_(scale).add_(bias)
        return x * scale + bias

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # Very old checkpoints lack running statistics: treat them as identity statistics.
        if prefix + "running_mean" not in state_dict:
            state_dict[prefix + "running_mean"] = torch.zeros_like(self.running_mean)
        if prefix + "running_var" not in state_dict:
            state_dict[prefix + "running_var"] = torch.ones_like(self.running_var)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def __repr__(self) -> str:
        return f"FrozenBatchNorm2d(num_features={self.num_features}, eps={self.eps})"

    @classmethod
    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        """Replace BatchNorm layers in ``module`` by frozen ones carrying the same statistics."""
        if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            frozen = cls(module.num_features, module.eps)
            if module.affine:
                frozen.weight.data.copy_(module.weight.data)
                frozen.bias.data.copy_(module.bias.data)
            frozen.running_mean.data.copy_(module.running_mean.data)
            frozen.running_var.data.copy_(module.running_var.data)
            return frozen
        for name, child in module.named_children():
            new = cls.convert_frozen_batchnorm(child)
            if new is not child:
                module.add_module(name, new)
        return module


def get_norm(norm: str, out_channels: int) -> nn.Module | None:
    """Norm layer by Detectron2's config name ('' = none)."""
    if not norm:
        return None
    factories = {
        "BN": lambda c: nn.BatchNorm2d(c),
        "SyncBN": lambda c: nn.SyncBatchNorm(c),
        "naiveSyncBN": lambda c: nn.SyncBatchNorm(c),
        "FrozenBN": FrozenBatchNorm2d,
        "GN": lambda c: nn.GroupNorm(32, c),
        "LN": lambda c: _ChannelLayerNorm(c),
    }
    if norm not in factories:
        raise ValueError(f"unknown norm {norm!r} (expected one of {sorted(factories)} or '')")
    return factories[norm](out_channels)


class _ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel dimension of NCHW tensors (Detectron2's 'LN')."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` with an optional ``norm`` submodule and activation (upstream's names)."""

    def __init__(self, *args, norm: nn.Module | None = None, activation=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x):
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                     self.groups)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


class DeformConv(nn.Module):
    """Deformable convolution v1 (``modulated=False``) or v2 (``modulated=True``).

    Parameter names follow Detectron2 (``weight``, optional ``bias``, ``norm``). The offset layout
    is the original DCN one (per deformable group, per kernel tap: dy, dx), which is also
    torchvision's. On the CPU the op is :func:`cellseg.core.engine.deform_conv.deform_conv2d`
    (torchvision's numerics, several times faster); elsewhere ``torchvision.ops.deform_conv2d``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, deformable_groups=1, bias=False, norm=None, activation=None,
                 modulated=False):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError("channels must be divisible by groups")
        k = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, k
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.modulated = modulated
        self.norm = norm
        self.activation = activation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *k))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x, offset, mask=None):
        if x.numel() == 0:
            h = (x.shape[2] + 2 * self.padding[0] - (self.dilation[0] * (self.kernel_size[0] - 1) + 1)) // self.stride[0] + 1
            w = (x.shape[3] + 2 * self.padding[1] - (self.dilation[1] * (self.kernel_size[1] - 1) + 1)) // self.stride[1] + 1
            return x.new_zeros(x.shape[0], self.out_channels, h, w)
        op = (cpu_deform_conv2d if x.device.type == "cpu" and x.dtype in _CPU_DEFORM_DTYPES
              else deform_conv2d)
        x = op(x, offset.to(x.dtype), self.weight, self.bias, stride=self.stride,
               padding=self.padding, dilation=self.dilation,
               mask=None if mask is None else mask.to(x.dtype))
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


_CPU_DEFORM_DTYPES = (torch.float32, torch.float64)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def c2_msra_fill(module: nn.Module) -> None:
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if module.bias is not None:
        nn.init.constant_(module.bias, 0)


def c2_xavier_fill(module: nn.Module) -> None:
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.constant_(module.bias, 0)
