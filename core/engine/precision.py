"""Inference precision: ``exact`` (float32 throughout, Detectron2's numerics) or ``fast``.

``fast`` runs the backbone (ResNet bottom-up and FPN, the bulk of the arithmetic) in a 16-bit
float -- bfloat16 on CPUs with native bf16 instructions (AVX512-BF16 or AMX), float16 on CUDA --
under ``torch.autocast``, and hands float32 features to everything after it. The RPN, the box
and mask heads and mask pasting stay float32 on purpose: the poolers cast box coordinates to
the feature dtype, and a 16-bit float cannot hold a coordinate of several hundred pixels to
better than 1-4 px (bfloat16 keeps 8 significant bits), which moves boxes and masks visibly.

Deformable convolutions stay float32 too: torchvision has no bfloat16 CPU kernel for them, and
their sampling offsets are coordinates as well.

A CPU without bf16 instructions would *emulate* bfloat16 and run slower than float32, so there
``fast`` falls back to ``exact`` and says so in one line (:attr:`Precision.note`): the result
is still correct, only not faster, and a settings file moved between machines keeps working.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import CellsegError
from .layers import DeformConv

PRECISIONS = ("exact", "fast")
# /proc/cpuinfo flags of native bfloat16 arithmetic (Intel Cooper Lake+, AMD Zen 4+)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class Precision:
    """What a predictor runs with.

    Attributes:
        requested: the precision asked for ("exact" or "fast").
        dtype: the backbone's compute dtype under autocast; None means float32 (exact).
        note: one line saying what runs and, on a fallback, why.
    """

    requested: str
    dtype: torch.dtype | None
    note: str

    @property
    def name(self) -> str:
        """The precision that actually runs: "fast" or "exact"."""
        return "exact" if self.dtype is None else "fast"

    @property
    def fell_back(self) -> bool:
        return self.requested == "fast" and self.dtype is None


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """The native-bfloat16 flags this CPU reports.

    Args:
        cpuinfo: text of ``/proc/cpuinfo``; read from the system when None (Linux only:
            elsewhere nothing is reported, so ``fast`` falls back to ``exact``).

    Returns:
        the subset of :data:`BF16_CPU_FLAGS` present, e.g. ``["avx512_bf16"]``.
    """
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        if not sys.platform.startswith("linux") or not path.is_file():
            return []
        cpuinfo = path.read_text(errors="replace")
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags") and ":" in line:
            flags.update(line.split(":", 1)[1].split())
    return [f for f in BF16_CPU_FLAGS if f in flags]


def resolve_precision(precision: str, device: torch.device, cpuinfo: str | None = None
                      ) -> Precision:
    """Choose the compute dtype for ``precision`` on ``device``.

    Args:
        precision: "exact" or "fast".
        device: where the model runs.
        cpuinfo: ``/proc/cpuinfo`` text to decide from (default: this machine's).

    Returns:
        a :class:`Precision`; ``fast`` on a CPU without native bf16 comes back as float32
        with a note saying so.
    """
    if precision not in PRECISIONS:
        raise CellsegError(f"unknown precision {precision!r} (expected exact or fast)")
    if precision == "exact":
        return Precision("exact", None, "exact: float32 throughout")
    if device.type == "cuda":
        return Precision("fast", torch.float16,
                         "fast: backbone and FPN in float16 (CUDA autocast), heads in float32")
    flags = cpu_bf16_flags(cpuinfo)
    if flags:
        return Precision("fast", torch.bfloat16,
                         f"fast: backbone and FPN in bfloat16 (CPU {'+'.join(flags)}, "
                         f"{torch.backends.cpu.get_cpu_capability()}), heads in float32")
    return Precision("fast", None,
                     "fast precision needs a CPU with bfloat16 instructions (avx512_bf16 or "
                     "amx_bf16) or a CUDA GPU; this CPU has neither: running exact (float32)")


@contextmanager
def no_tf32(enabled: bool = True):
    """Keep CUDA float32 convolutions and matmuls in IEEE float32 while inside.

    cuDNN runs float32 convolutions as TF32 (10-bit mantissa) on Ampere and later GPUs by
    default; exact mode must not, or it would not reproduce Detectron2's float32 outputs. The
    previous global flags come back on exit.
    """
    if not enabled:
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _float32_inputs(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)


def _autocast_forward(forward, device_type: str, dtype: torch.dtype):
    def run(x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.autocast(device_type, dtype=dtype):
            features = forward(x)
        return {name: f.float() for name, f in features.items()}

    return run


def apply_precision(model: nn.Module, precision: Precision) -> nn.Module:
    """Make ``model`` (a GeneralizedRCNN, on its device, for inference) run at ``precision``.

    For a 16-bit precision the backbone's convolution weights are converted once (autocast
    would otherwise convert every weight on every call, which costs as much as it saves on a
    small image), its forward runs under ``torch.autocast`` and returns float32 features, and
    deformable convolutions get float32 inputs. Norm statistics stay float32. Exact: no change.

    Args:
        model: the model; changed in place (build a new one to go back to exact).
        precision: from :func:`resolve_precision`.

    Returns:
        ``model``.
    """
    if precision.dtype is None:
        return model
    backbone = model.backbone
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d):
            module.weight.data = module.weight.data.to(precision.dtype)
            if module.bias is not None:
                module.bias.data = module.bias.data.to(precision.dtype)
        elif isinstance(module, DeformConv):
            module.register_forward_pre_hook(_float32_inputs)
    # an instance attribute: nn.Module.__call__ finds it before the class's forward
    backbone.forward = _autocast_forward(backbone.forward, model.device.type, precision.dtype)
    return model
