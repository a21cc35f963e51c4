"""The CPU deformable convolution against torchvision's op: values and gradients, all options."""
from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torchvision.ops import deform_conv2d as tv_deform_conv2d

from cellseg.core.engine import deform_conv as dc
from cellseg.core.engine.deform_conv import deform_conv2d
from cellseg.core.engine.layers import DeformConv


@contextmanager
def _chunk_bytes(n: int):
    """Small chunks make even tiny outputs span several row chunks (the chunk seams get tested)."""
    old, dc.CHUNK_BYTES = dc.CHUNK_BYTES, n
    try:
        yield
    finally:
        dc.CHUNK_BYTES = old


@st.composite
def problems(draw):
    """A random small deformable convolution with offsets reaching well outside the image."""
    groups = draw(st.sampled_from([1, 2, 3]))
    dg = draw(st.sampled_from([1, 2]))
    c = groups * dg * draw(st.integers(1, 2))
    kh, kw = draw(st.sampled_from([1, 3])), draw(st.sampled_from([1, 3]))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    h = draw(st.integers(max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0]), 7))
    w = draw(st.integers(max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1]), 7))
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    n = draw(st.integers(1, 2))
    out_c = groups * draw(st.integers(1, 3))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    dtype = torch.float64
    # either continuous offsets up to the image size, or half-integers: those put samples
    # exactly on grid lines and on the borders (h == -1, h == H - 1, h == H), where the
    # zero-padding and one-sided-derivative conventions must agree with torchvision's
    span = float(max(h, w) + 2)
    shape = (n, 2 * dg * kh * kw, ho, wo)
    if draw(st.booleans()):
        offset = (torch.rand(shape, generator=g, dtype=dtype) * 2 - 1) * span
    else:
        offset = torch.randint(-2 * int(span), 2 * int(span) + 1, shape, generator=g).to(dtype) / 2
    mask = (torch.rand((n, dg * kh * kw, ho, wo), generator=g, dtype=dtype)
            if draw(st.booleans()) else None)
    bias = torch.randn(out_c, generator=g, dtype=dtype) if draw(st.booleans()) else None
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    if draw(st.booleans()):  # the Predictor runs the model channels-last
        x = x.contiguous(memory_format=torch.channels_last)
    return dict(input=x, offset=offset,
                weight=torch.randn(out_c, c // groups, kh, kw, generator=g, dtype=dtype),
                bias=bias, mask=mask, stride=stride, padding=padding, dilation=dilation,
                chunk=draw(st.sampled_from([1, 200, dc.CHUNK_BYTES])))


def _run(op, p, grad_out=None):
    """Output and, with ``grad_out``, gradients wrt every tensor argument."""
    tensors = {k: p[k].detach().clone().requires_grad_(grad_out is not None)
               for k in ("input", "offset", "weight", "bias", "mask") if p[k] is not None}
    out = op(tensors["input"], tensors["offset"], tensors["weight"], tensors.get("bias"),
             stride=p["stride"], padding=p["padding"], dilation=p["dilation"],
             mask=tensors.get("mask"))
    if grad_out is None:
        return out, {}
    grads = torch.autograd.grad(out, list(tensors.values()), grad_out)
    return out, dict(zip(tensors, grads))


@settings(max_examples=40, deadline=None)
@given(problems())
def test_forward_and_gradients_match_torchvision(p):
    expected, _ = _run(tv_deform_conv2d, p)
    grad_out = torch.randn(expected.shape, dtype=expected.dtype,
                           generator=torch.Generator().manual_seed(1))
    expected, expected_grads = _run(tv_deform_conv2d, p, grad_out)
    with _chunk_bytes(p["chunk"]):
        out, grads = _run(deform_conv2d, p, grad_out)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert grads.keys() == expected_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], rtol=1e-10, atol=1e-10,
                                   msg=lambda m, name=name: f"grad wrt {name}: {m}")


@settings(max_examples=15, deadline=None)
@given(problems())
def test_float32_matches_torchvision_to_float_rounding(p):
    p = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in p.items()}
    expected, _ = _run(tv_deform_conv2d, p)
    out, _ = _run(deform_conv2d, p)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axis", [0, 1], ids=["rows", "columns"])
def test_samples_outside_the_image_are_zero(axis):
    """Zero padding as torchvision: a sample at <= -1 or >= size reads 0, in between it blends
    the border pixel with zero."""
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64)
    weight = torch.ones(1, 2, 1, 1, dtype=torch.float64)  # 1x1: output = sum of channels
    plane = x.sum(1)[0]  # (4, 5)
    if axis == 1:  # work on columns as if they were rows
        plane = plane.t()
    size = plane.shape[0]
    first, last = plane[0], plane[-1]
    zero = torch.zeros_like(first)
    cases = {-1.5: zero, -1.0: zero, -0.5: 0.5 * first, 0.0: first, size - 1.0: last,
             size - 0.5: 0.5 * last, float(size): zero, size + 3.25: zero}
    grid = torch.arange(float(size), dtype=torch.float64)
    for position, expected in cases.items():
        offset = torch.zeros(1, 2, 4, 5, dtype=torch.float64)
        # move every output pixel's sample to ``position`` along ``axis``
        offset[0, axis] = position - (grid[:, None] if axis == 0 else grid[None, :])
        out = deform_conv2d(x, offset, weight)[0, 0]
        along = out if axis == 0 else out.t()
        torch.testing.assert_close(along, expected.expand_as(along), msg=f"sample at {position}")
        torch.testing.assert_close(out, tv_deform_conv2d(x, offset, weight)[0, 0])


def test_channels_last_input_gives_the_same_result_in_channels_last():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 9, 7)
    offset = torch.randn(2, 18, 9, 7) * 3
    mask = torch.rand(2, 9, 9, 7)
    weight = torch.randn(6, 4, 3, 3)
    plain = deform_conv2d(x, offset, weight, padding=1, mask=mask)
    xl = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    last = deform_conv2d(xl, offset, weight, padding=1, mask=mask)
    assert last.is_contiguous(memory_format=torch.channels_last)
    assert plain.is_contiguous()
    # the matrix product runs in the order that writes each layout: equal to float rounding
    torch.testing.assert_close(last, plain, rtol=1e-5, atol=1e-5)
    last.sum().backward()
    xp = x.clone().requires_grad_()
    deform_conv2d(xp, offset, weight, padding=1, mask=mask).sum().backward()
    assert xl.grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(xl.grad, xp.grad, rtol=1e-5, atol=1e-5)


def test_gradcheck_with_groups_and_deformable_groups():
    torch.manual_seed(2)
    x = torch.randn(1, 4, 4, 5, dtype=torch.float64, requires_grad=True)
    # fractional positions: bilinear sampling is not differentiable on grid lines
    offset = (torch.rand(1, 2 * 2 * 9, 2, 3, dtype=torch.float64) * 0.8 + 0.1) * 3
    offset.requires_grad_()
    mask = torch.rand(1, 2 * 9, 2, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: deform_conv2d(*a[:4], stride=(2, 1), padding=1, dilation=(1, 2), mask=a[4]),
        (x, offset, weight, bias, mask), eps=1e-6, atol=1e-5)


def test_deform_conv_layer_uses_the_cpu_op():
    torch.manual_seed(3)
    conv = DeformConv(8, 8, 3, padding=1, groups=4, bias=True, modulated=True)
    x, offset, mask = torch.randn(1, 8, 6, 6), torch.randn(1, 18, 6, 6) * 2, torch.rand(1, 9, 6, 6)
    ours = deform_conv2d(x, offset, conv.weight, conv.bias, padding=1, mask=mask)
    assert torch.equal(conv(x, offset, mask), ours)
    torch.testing.assert_close(conv(x, offset, mask),
                               tv_deform_conv2d(x, offset, conv.weight, conv.bias, padding=1,
                                                mask=mask), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("change,message", [
    (dict(offset=torch.zeros(1, 17, 4, 4)), "offset has 17 channels"),
    (dict(offset=torch.zeros(1, 18, 3, 4)), "offset shape"),
    (dict(mask=torch.zeros(1, 8, 4, 4)), "mask shape"),
    (dict(weight=torch.zeros(2, 3, 3, 3)), "not a multiple of weight.shape"),
    (dict(bias=torch.zeros(3)), "bias shape"),
    (dict(input=torch.zeros(1, 4, 4)), "4-D"),
])
def test_bad_shapes_raise_a_clear_error(change, message):
    args = dict(input=torch.zeros(1, 4, 4, 4), offset=torch.zeros(1, 18, 4, 4),
                weight=torch.zeros(2, 4, 3, 3), bias=None, mask=None)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        deform_conv2d(args["input"], args["offset"], args["weight"], args["bias"], padding=1,
                      mask=args["mask"])
