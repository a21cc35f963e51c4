"""Deformable convolution (DCN v1 and v2) on the CPU from stock PyTorch ops.

Same arguments, offset/mask layout and numerics (to float rounding) as
``torchvision.ops.deform_conv2d``, forward and backward, but several times faster on the CPU
(``benchmarks/deform_conv.py``). Both compute ``out = W @ columns`` where ``columns`` holds,
for every output pixel, kernel tap and input channel, the input bilinearly sampled at the
tap's offset position (zero outside the image). Torchvision fills ``columns`` one scalar at a
time; here:

* the four bilinear corners (row index into the NHWC input, weight incl. validity and the
  modulation mask) are computed once per (pixel, tap, deformable group) for all channels:
  channel-independent work is C/deformable_groups times smaller than the sampling itself;
* ``F.embedding_bag(mode="sum", per_sample_weights=...)`` gathers the four corner rows (all
  channels of a deformable group are contiguous in NHWC) and sums them with their weights in
  one vectorised, multi-threaded pass: that *is* bilinear sampling;
* one batched matrix multiply over the convolution groups (``torch.bmm``) consumes the columns.

Work is chunked over output rows so that a chunk's columns stay a few MB (cache-resident, and
memory stays bounded for any image size). Backward is explicit: weight gradient and column
gradient by ``bmm``; input gradient by scattering the column gradient back with the corner
weights (one sparse @ dense ``addmm_``); offset and mask gradients from the dot products of
the column gradient with each corner's input row (``torch.sparse.sampled_addmm``) times the
bilinear weights' derivatives, all with torchvision's boundary conventions.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable
from torch.nn import functional as F
from torch.nn.modules.utils import _pair

# Bytes of one chunk's column matrix: small enough to stay mostly in cache, large enough that
# a chunk's few multi-threaded ops do not spend their time synchronising threads (measured on a
# busy 2-core machine: 4-6 MB is ~10% faster on one thread, 16 MB 2x faster on two).
CHUNK_BYTES = 16 << 20

__all__ = ["deform_conv2d"]


def deform_conv2d(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor | None = None, stride=1, padding=0, dilation=1,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """Deformable convolution, a drop-in replacement of ``torchvision.ops.deform_conv2d``.

    Args:
        input: (N, C, H, W) float32/float64 CPU tensor (any memory format; channels-last
            input avoids one transposing copy and gives a channels-last output).
        offset: (N, 2 * dg * kh * kw, Ho, Wo): per deformable group ``d`` and kernel tap
            ``k = i * kw + j``, channel ``2 * (d * kh * kw + k)`` is the y offset and the next
            channel the x offset (torchvision's / the original DCN's layout).
        weight: (O, C / groups, kh, kw); ``groups`` is ``C // weight.shape[1]``.
        bias: optional (O,).
        stride, padding, dilation: int or (h, w) pair.
        mask: optional (N, dg * kh * kw, Ho, Wo) modulation (DCN v2); None for DCN v1.

    Returns:
        (N, O, Ho, Wo) tensor, channels-last strided when ``input`` is channels-last.
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    geometry = _check(input, offset, weight, bias, stride, padding, dilation, mask)
    return _DeformConv2d.apply(input, offset, weight, bias, mask, geometry)


@dataclass(frozen=True)
class _Geometry:
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    kernel: tuple[int, int]
    groups: int
    deform_groups: int
    out_size: tuple[int, int]


def _check(input, offset, weight, bias, stride, padding, dilation, mask) -> _Geometry:
    if input.dim() != 4 or offset.dim() != 4 or weight.dim() != 4:
        raise ValueError("input, offset and weight must be 4-D (N, C, H, W) tensors")
    n, c, h, w = input.shape
    out_c, c_per_group, kh, kw = weight.shape
    if c_per_group == 0 or c % c_per_group:
        raise ValueError(f"input channels {c} are not a multiple of weight.shape[1] {c_per_group}")
    groups = c // c_per_group
    if out_c % groups:
        raise ValueError(f"output channels {out_c} are not a multiple of groups {groups}")
    if offset.shape[1] == 0 or offset.shape[1] % (2 * kh * kw):
        raise ValueError(f"offset has {offset.shape[1]} channels, not a multiple of "
                         f"2 * {kh} * {kw}")
    dg = offset.shape[1] // (2 * kh * kw)
    if c % dg:
        raise ValueError(f"input channels {c} are not a multiple of deformable groups {dg}")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError("stride and dilation must be >= 1 and padding >= 0")
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"input {h}x{w} is smaller than the dilated kernel")
    if tuple(offset.shape) != (n, 2 * dg * kh * kw, ho, wo):
        raise ValueError(f"offset shape {tuple(offset.shape)} != {(n, 2 * dg * kh * kw, ho, wo)}")
    if mask is not None and tuple(mask.shape) != (n, dg * kh * kw, ho, wo):
        raise ValueError(f"mask shape {tuple(mask.shape)} != {(n, dg * kh * kw, ho, wo)}")
    if bias is not None and tuple(bias.shape) != (out_c,):
        raise ValueError(f"bias shape {tuple(bias.shape)} != {(out_c,)}")
    return _Geometry(stride, padding, dilation, (kh, kw), groups, dg, (ho, wo))


@dataclass
class _Corners:
    """Bilinear sampling of one image: rows and weights of the four corners per sample.

    Samples are ordered (Ho, Wo, K, dg), so a chunk of output rows is a contiguous slice and
    the sampled values, one deformable group's channels each, line up as (Ho, Wo, K, C).
    """

    rows: torch.Tensor      # (S, 4) int64 rows of the (H * W * dg, C / dg) input table
    weights: torch.Tensor   # (S, 4) bilinear weight * validity (* mask if modulated)
    unmasked: torch.Tensor | None  # (S, 4) bilinear weight * validity, DCN v2 only
    grad_y: torch.Tensor | None    # (S, 4) d(weight)/dy * validity (no mask)
    grad_x: torch.Tensor | None    # (S, 4) d(weight)/dx * validity (no mask)
    mask: torch.Tensor | None      # (S,) modulation, DCN v2 only


def _corners(offset: torch.Tensor, mask: torch.Tensor | None, size: tuple[int, int],
             geo: _Geometry, lo: int, hi: int, derivatives: bool = False) -> _Corners:
    """Corner rows and weights for the samples of output rows [lo, hi) of one image.

    Per chunk rather than per image: the tensors stay small enough for torch to run each op
    on one thread, which avoids ~30 thread synchronisations per chunk (costly on a busy CPU).

    Args:
        offset: (2 * dg * K, Ho, Wo) offsets of one image.
        mask: (dg * K, Ho, Wo) or None.
        size: the input's (H, W).
        lo, hi: the output rows.
        derivatives: also return the weights' derivatives wrt the sample position.

    Returns:
        :class:`_Corners` with S = (hi - lo) * Wo * K * dg samples.
    """
    height, width = size
    (kh, kw), dg, wo = geo.kernel, geo.deform_groups, geo.out_size[1]
    k, ho = kh * kw, hi - lo
    dtype, device = offset.dtype, offset.device
    offset, mask = offset[:, lo:hi], None if mask is None else mask[:, lo:hi]
    off = offset.reshape(dg, k, 2, ho, wo).permute(3, 4, 1, 0, 2)  # (Ho, Wo, K, dg, 2)
    # integer part of the position exactly as torchvision: (o * stride - pad) + i * dilation
    tap_i = torch.arange(kh, device=device).repeat_interleave(kw)
    tap_j = torch.arange(kw, device=device).repeat(kh)
    base_y = (torch.arange(lo, hi, device=device)[:, None] * geo.stride[0] - geo.padding[0]
              + tap_i[None, :] * geo.dilation[0]).to(dtype)  # (Ho, K)
    base_x = (torch.arange(wo, device=device)[:, None] * geo.stride[1] - geo.padding[1]
              + tap_j[None, :] * geo.dilation[1]).to(dtype)  # (Wo, K)
    y = off[..., 0] + base_y[:, None, :, None]  # (Ho, Wo, K, dg)
    x = off[..., 1] + base_x[None, :, :, None]
    y0, x0 = y.floor(), x.floor()
    ly, lx = y - y0, x - x0
    hy, hx = 1 - ly, 1 - lx
    y0i, x0i = y0.long(), x0.long()
    # A corner counts when it lies in the image. That alone gives torchvision's zero padding
    # (a sample at <= -1 or >= size has no corner inside, or only one of weight 0) and its
    # offset gradient, which has no such range test (it is not zero at exactly -1).
    valid_y0, valid_y1 = (y0i >= 0) & (y0i < height), (y0i >= -1) & (y0i < height - 1)
    valid_x0, valid_x1 = (x0i >= 0) & (x0i < width), (x0i >= -1) & (x0i < width - 1)
    valid = torch.stack((valid_y0 & valid_x0, valid_y0 & valid_x1,
                         valid_y1 & valid_x0, valid_y1 & valid_x1), dim=-1)
    group = torch.arange(dg, device=device)
    row00 = (y0i * width + x0i) * dg + group  # row of the top-left corner
    step_y, step_x = width * dg, dg
    rows = torch.stack((row00, row00 + step_x, row00 + step_y, row00 + step_y + step_x), dim=-1)
    # invalid corners read row 0 with weight 0 (the index must stay in bounds)
    rows = torch.where(valid, rows, 0).reshape(-1, 4)
    zero = torch.zeros((), dtype=dtype, device=device)
    weights = torch.where(valid, torch.stack((hy * hx, hy * lx, ly * hx, ly * lx), dim=-1), zero)
    weights = weights.reshape(-1, 4)
    grad_y = grad_x = None
    if derivatives:
        grad_y = torch.where(valid, torch.stack((-hx, -lx, hx, lx), dim=-1), zero).reshape(-1, 4)
        grad_x = torch.where(valid, torch.stack((-hy, hy, -ly, ly), dim=-1), zero).reshape(-1, 4)
    unmasked = flat_mask = None
    if mask is not None:
        flat_mask = mask.reshape(dg, k, ho, wo).permute(2, 3, 1, 0).reshape(-1)
        unmasked, weights = weights, weights * flat_mask[:, None]
    return _Corners(rows, weights, unmasked, grad_y, grad_x, flat_mask)


def _input_table(image: torch.Tensor, dg: int) -> torch.Tensor:
    """(C, H, W) -> (H * W * dg, C / dg): one row per pixel and deformable group."""
    c, h, w = image.shape
    # a 2-D transpose takes torch's blocked copy: ~10x faster than permuting the 3-D tensor
    return image.reshape(c, h * w).t().contiguous().view(h * w * dg, c // dg)


def _grouped_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """(O, C/g, kh, kw) -> (g, O/g, K * C/g), columns ordered (tap, channel) like the samples."""
    out_c, cg, kh, kw = weight.shape
    return weight.reshape(groups, out_c // groups, cg, kh * kw).transpose(2, 3).reshape(
        groups, out_c // groups, kh * kw * cg)


def _row_chunks(geo: _Geometry, channels: int, itemsize: int):
    """Output-row ranges whose column matrices hold about CHUNK_BYTES each."""
    ho, wo = geo.out_size
    row_bytes = wo * geo.kernel[0] * geo.kernel[1] * channels * itemsize
    step = max(1, CHUNK_BYTES // row_bytes)
    return [(r, min(r + step, ho)) for r in range(0, ho, step)]


def _columns(table: torch.Tensor, corners: _Corners, taps: int, channels: int,
             groups: int) -> torch.Tensor:
    """The chunk's sampled input as (g, L, K * C/g) columns.

    Bilinear sampling is a weighted sum of four gathered rows: exactly what ``embedding_bag``
    computes, vectorised over the row and parallel over the samples.
    """
    sampled = F.embedding_bag(corners.rows, table, mode="sum",
                              per_sample_weights=corners.weights)  # (L * K * dg, C/dg)
    return _group_major(sampled.view(-1, taps, channels), groups)


def _group_major(samples: torch.Tensor, groups: int) -> torch.Tensor:
    """(L, K, C) -> (g, L, K * C/g): one contiguous column matrix per convolution group."""
    length, taps, channels = samples.shape
    cg = channels // groups
    return samples.view(length, taps, groups, cg).permute(2, 0, 1, 3).reshape(
        groups, length, taps * cg)


def _sample_major(columns: torch.Tensor, taps: int) -> torch.Tensor:
    """(g, L, K * C/g) -> (L, K, C), the inverse of :func:`_group_major`."""
    groups, length, width = columns.shape
    cg = width // taps
    return columns.view(groups, length, taps, cg).permute(1, 2, 0, 3).reshape(
        length, taps, groups * cg)


def _scatter_add(grad_table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor,
                 grad_rows: torch.Tensor) -> None:
    """The transposed gather: ``grad_table[rows[s, i]] += weights[s, i] * grad_rows[s]``.

    One sparse (table rows x samples) @ dense product with 4 entries per column; torch's CPU
    kernel accumulates duplicates without sorting and is ~10x faster than four ``index_add_``.
    """
    samples = rows.shape[0]
    sample = torch.arange(samples, device=rows.device).repeat_interleave(4)
    scatter = torch.sparse_coo_tensor(torch.stack((rows.reshape(-1), sample)), weights.reshape(-1),
                                      (grad_table.shape[0], samples), check_invariants=False)
    grad_table.addmm_(scatter, grad_rows)


def _corner_dots(table: torch.Tensor, rows: torch.Tensor, grad_rows: torch.Tensor) -> torch.Tensor:
    """(samples, 4): dot product of each sample's gradient row with each of its corner rows.

    A sampled dense product (``grad_rows @ table.T`` evaluated at the corners only), so the
    corner rows are never gathered into memory.
    """
    samples = rows.shape[0]
    if table.shape[0] < 4:  # the sparse kernel wants no more entries per row than columns
        return (table[rows] * grad_rows[:, None, :]).sum(-1)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": these ops are stable
        warnings.simplefilter("ignore", UserWarning)
        pattern = torch.sparse_csr_tensor(
            torch.arange(0, 4 * samples + 1, 4, device=rows.device), rows.reshape(-1),
            grad_rows.new_zeros(4 * samples), (samples, table.shape[0]), check_invariants=False)
        dots = torch.sparse.sampled_addmm(pattern, grad_rows, table.t(), beta=0.0)
    return dots.values().view(samples, 4)


class _DeformConv2d(torch.autograd.Function):
    """Forward and explicit backward; inputs are (input, offset, weight, bias, mask, geometry)."""

    @staticmethod
    def forward(ctx, input, offset, weight, bias, mask, geo: _Geometry):
        n, c, h, w = input.shape
        (kh, kw), (ho, wo) = geo.kernel, geo.out_size
        taps, groups, dg = kh * kw, geo.groups, geo.deform_groups
        out_c = weight.shape[0]
        ctx.geo = geo
        ctx.save_for_backward(input, offset, weight, bias, mask)
        channels_last = input.is_contiguous(memory_format=torch.channels_last) and c > 1
        out = torch.empty((n, out_c, ho, wo), dtype=input.dtype, device=input.device,
                          memory_format=torch.channels_last if channels_last
                          else torch.contiguous_format)
        w_g = _grouped_weight(weight, groups)  # (g, O/g, K * C/g)
        for b in range(n):
            table = _input_table(input[b], dg)
            for lo, hi in _row_chunks(geo, c, input.element_size()):
                corners = _corners(offset[b], None if mask is None else mask[b], (h, w), geo,
                                   lo, hi)
                cols = _columns(table, corners, taps, c, groups)
                dest = out[b, :, lo:hi].view(groups, out_c // groups, -1)  # (g, O/g, L)
                # multiply in the order whose result has the output's memory layout. (bmm into
                # the strided output directly, out=dest, loops over the groups: much slower)
                if channels_last:
                    dest.copy_(torch.bmm(cols, w_g.transpose(1, 2)).transpose(1, 2))
                else:
                    dest.copy_(torch.bmm(w_g, cols.transpose(1, 2)))
        if bias is not None:
            out.add_(bias.view(1, -1, 1, 1))
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        input, offset, weight, bias, mask = ctx.saved_tensors
        geo: _Geometry = ctx.geo
        need_input, need_offset, need_weight, need_bias, need_mask = ctx.needs_input_grad[:5]
        n, c, h, w = input.shape
        (kh, kw), (ho, wo) = geo.kernel, geo.out_size
        taps, groups, dg = kh * kw, geo.groups, geo.deform_groups
        out_c = weight.shape[0]
        per_row = wo * taps * dg
        w_g = _grouped_weight(weight, groups)  # (g, O/g, K * C/g)
        grad_input = torch.empty_like(input) if need_input else None  # keeps the layout
        grad_w = torch.zeros_like(w_g) if need_weight else None
        need_coords = need_offset or need_mask
        # (Ho, Wo, K, dg, 2) per image, permuted to the offset layout at the end
        grad_off = offset.new_zeros(n, ho * wo * taps * dg, 2) if need_offset else None
        grad_mask = offset.new_zeros(n, ho * wo * taps * dg) if need_mask else None
        for b in range(n):
            table = _input_table(input[b], dg)
            grad_table = torch.zeros_like(table) if need_input else None
            for lo, hi in _row_chunks(geo, c, input.element_size()):
                s0, s1 = lo * per_row, hi * per_row
                corners = _corners(offset[b], None if mask is None else mask[b], (h, w), geo,
                                   lo, hi, derivatives=need_offset)
                go = grad_out[b, :, lo:hi].reshape(groups, out_c // groups, -1)  # (g, O/g, L)
                if need_weight:
                    cols = _columns(table, corners, taps, c, groups)
                    grad_w.baddbmm_(go, cols)
                if not (need_input or need_coords):
                    continue
                # gradient of the sampled values, one row per sample: (L * K * dg, C/dg)
                grad_cols = _sample_major(torch.bmm(go.transpose(1, 2), w_g), taps)
                grad_cols = grad_cols.reshape(s1 - s0, -1)
                rows, weights = corners.rows, corners.weights
                if need_input:
                    _scatter_add(grad_table, rows, weights, grad_cols)
                if need_coords:
                    dots = _corner_dots(table, rows, grad_cols)  # (samples, 4)
                    if need_offset:
                        scale = dots if mask is None else dots * corners.mask[:, None]
                        grad_off[b, s0:s1, 0] = (scale * corners.grad_y).sum(-1)
                        grad_off[b, s0:s1, 1] = (scale * corners.grad_x).sum(-1)
                    if need_mask:
                        grad_mask[b, s0:s1] = (dots * corners.unmasked).sum(-1)
            if need_input:
                if grad_input.is_contiguous():
                    grad_input[b].view(c, h * w).copy_(grad_table.view(h * w, c).t())
                else:
                    grad_input[b].permute(1, 2, 0).copy_(grad_table.view(h, w, c))
        grad_offset = grad_weight = grad_bias = grad_m = None
        if need_offset:
            grad_offset = grad_off.view(n, ho, wo, taps, dg, 2).permute(0, 4, 3, 5, 1, 2)
            grad_offset = grad_offset.reshape(n, dg * taps * 2, ho, wo)
        if need_weight:
            cg = c // groups
            grad_weight = grad_w.view(groups, out_c // groups, taps, cg).transpose(2, 3)
            grad_weight = grad_weight.reshape(weight.shape)
        if need_bias and bias is not None:
            grad_bias = grad_out.sum((0, 2, 3))
        if need_mask:
            grad_m = grad_mask.view(n, ho, wo, taps, dg).permute(0, 4, 3, 1, 2)
            grad_m = grad_m.reshape(n, dg * taps, ho, wo)
        return grad_input, grad_offset, grad_weight, grad_bias, grad_m, None
