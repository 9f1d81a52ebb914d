"""The exported form of the neck's modulated deformable convolution (GridSample taps,
mask, one MatMul) equals torchvision's deform_conv2d, which eager runs use."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import deform_conv2d

from ovseg_ros.modeling.eov_seg.deform_conv import deform_conv2d_grid_sample

TOLERANCE = 1e-4  # max abs, fp32


def _case(batch, channels, out_channels, height, width, stride=1, padding=1, dilation=1, kernel=3, offset_scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    out_h = (height + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    out_w = (width + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    x = torch.randn(batch, channels, height, width, generator=g)
    offset = torch.randn(batch, 2 * kernel * kernel, out_h, out_w, generator=g) * offset_scale
    mask = torch.rand(batch, kernel * kernel, out_h, out_w, generator=g)
    weight = torch.randn(out_channels, channels, kernel, kernel, generator=g) / (channels * kernel * kernel) ** 0.5
    return x, offset, weight, mask, dict(stride=stride, padding=padding, dilation=dilation)


@pytest.mark.parametrize("shape", [
    (2, 5, 7, 9, 11, 1, 1, 1, 3),  # batch of two, odd sizes
    (1, 4, 3, 6, 5, 2, 1, 1, 3),  # stride 2
    (1, 3, 2, 7, 8, 1, 2, 2, 3),  # dilation 2
    (1, 2, 3, 5, 4, 1, 0, 1, 1),  # 1x1 kernel
    (1, 1, 1, 1, 1, 1, 1, 1, 3),  # a single pixel: every tap but the centre outside
])
def test_random_inputs(shape):
    x, offset, weight, mask, kw = _case(*shape[:5], stride=shape[5], padding=shape[6], dilation=shape[7], kernel=shape[8])
    expected = deform_conv2d(x, offset, weight, mask=mask, **kw)
    assert (deform_conv2d_grid_sample(x, offset, weight, mask, **kw) - expected).abs().max() <= TOLERANCE


@pytest.mark.parametrize("offset_scale", [0.0, 0.5, 30.0])
def test_offsets_far_outside_and_integer(offset_scale):
    """Zero offsets (a plain conv), sub-pixel ones, and ones far outside the image
    (samples read zeros, partial bilinear weights at the border)."""
    x, offset, weight, mask, kw = _case(1, 6, 4, 10, 12, offset_scale=offset_scale, seed=3)
    for off in (offset, offset.round()):
        expected = deform_conv2d(x, off, weight, mask=mask, **kw)
        assert (deform_conv2d_grid_sample(x, off, weight, mask, **kw) - expected).abs().max() <= TOLERANCE


@pytest.mark.parametrize("channels,out_channels,height,width", [
    (1024, 512, 15, 20),  # deform_conv1 of EOV-Seg S at 480x640 (res5 -> res4 width)
    (512, 256, 30, 40),  # deform_conv2
    (256, 128, 60, 80),  # deform_conv3
])
def test_the_necks_real_shapes(channels, out_channels, height, width):
    x, offset, weight, mask, kw = _case(1, channels, out_channels, height, width, offset_scale=2.0, seed=7)
    x = x * 4  # activations after ReLU/BN reach a few units
    expected = deform_conv2d(x, offset, weight, mask=mask, **kw)
    got = deform_conv2d_grid_sample(x, offset, weight, mask, **kw)
    assert (got - expected).abs().max() <= TOLERANCE


def test_the_neck_exports_the_decomposed_form(tiny_model):
    """Eager runs use torchvision's op; under ONNX export the neck switches to the
    decomposition, and the two agree on the neck's output."""
    from ovseg_ros.modeling.eov_seg.neck import ModulatedDeformConv

    dcn = next(m for m in tiny_model.modules() if isinstance(m, ModulatedDeformConv))
    x = torch.randn(1, dcn.weight.shape[1], 8, 10)
    offset = torch.randn(1, 18, 8, 10)
    mask = torch.rand(1, 9, 8, 10)
    with torch.no_grad():
        assert (dcn(x, offset, mask) - deform_conv2d_grid_sample(x, offset, dcn.weight, mask, padding=1)).abs().max() <= TOLERANCE
