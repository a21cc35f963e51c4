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

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The affine map this layer applies: ``y = x * scale + shift``, both (C,)."""
        # computed as upstream computes it, so the rounding of scale/shift is upstream's
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def fold_into(self, weight: torch.Tensor, bias: torch.Tensor | None):
        """Conv ``weight`` (C, ...) and ``bias`` with this layer applied after them folded in.

        ``norm(conv(x, w, b)) == conv(x, w * scale, b * scale + shift)`` up to float rounding
        (~1e-7 relative): inference then skips two full passes over the conv's output.
        """
        scale, shift = self.scale_shift()
        folded_w = weight * scale.to(weight.dtype).reshape(-1, *([1] * (weight.dim() - 1)))
        folded_b = shift if bias is None else bias * scale + shift
        return folded_w, folded_b.to(weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Folding into scale/shift (as upstream does) keeps the numerics identical to upstream.
        scale, bias = self.scale_shift()
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


def _has_onednn_fusion() -> bool:
    """oneDNN's fused conv + pointwise kernels (what torch.compile's CPU backend calls)."""
    try:
        return (torch.backends.mkldnn.is_available()
                and hasattr(torch.ops.mkldnn._convolution_pointwise, "binary"))
    except (AttributeError, RuntimeError):
        return False


_ONEDNN_FUSION = _has_onednn_fusion()


def _is_relu(fn) -> bool:
    return isinstance(fn, nn.ReLU) or fn in (F.relu, F.relu_, torch.relu)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` with an optional ``norm`` submodule and activation (upstream's names).

    At CPU float32 inference, a FrozenBN norm is folded into the weights and a ReLU activation
    (and, through :meth:`forward_add_relu`, a residual sum) run inside oneDNN's convolution as
    post-ops: the same float operations in the same order as the separate ops, minus the
    extra passes over the output (bitwise identical on the fixtures).
    """

    def __init__(self, *args, norm: nn.Module | None = None, activation=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, None, _is_relu(self.activation))

    def forward_relu(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(norm(conv(x)))`` whatever ``activation`` says (ResNet blocks have none)."""
        return self._run(x, None, True)

    def forward_add_relu(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``relu(norm(conv(x)) + residual)``, a ResNet block's last step (no activation)."""
        return self._run(x, residual, True)

    def _run(self, x, residual, relu: bool) -> torch.Tensor:
        weight, bias, norm = self.weight, self.bias, self.norm
        if isinstance(norm, FrozenBatchNorm2d) and not torch.is_grad_enabled():
            # inference: the frozen affine goes into the conv's weights (no pass over x)
            weight, bias = norm.fold_into(weight, bias)
            norm = None
        if norm is None and self._fusable(x, residual):
            args = (weight, bias, list(self.padding), list(self.stride), list(self.dilation),
                    self.groups)
            if residual is not None:
                return torch.ops.mkldnn._convolution_pointwise.binary(
                    x, residual, *args, "add", 1.0, "relu" if relu else "none", [], "")
            return torch.ops.mkldnn._convolution_pointwise(x, *args, "relu" if relu else "none",
                                                           [], "")
        x = F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        if norm is not None:
            x = norm(x)
        if residual is not None:
            return F.relu_(x + residual)
        if relu:
            return F.relu_(x) if not torch.is_grad_enabled() else F.relu(x)
        return x if self.activation is None else self.activation(x)

    def _fusable(self, x: torch.Tensor, residual) -> bool:
        # (under autocast, or with 16-bit weights from fast precision, F.conv2d casts: keep it)
        return (_ONEDNN_FUSION and x.device.type == "cpu" and x.dtype == torch.float32
                and self.weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
                and not torch.is_grad_enabled() and x.dim() == 4 and x.numel() > 0
                and self.padding_mode == "zeros" and not isinstance(self.padding, str)
                and (residual is None or (residual.shape[1] == self.out_channels
                                          and residual.dtype == x.dtype)))


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
