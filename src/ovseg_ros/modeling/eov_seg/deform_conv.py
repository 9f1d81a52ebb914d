"""Modulated deformable convolution (DCNv2) written with standard ops.

TensorRT 8.6 has no DeformConv importer and 10.0 none either (10.1 maps it to a plugin),
so the exported graph cannot carry ONNX DeformConv and still build on every robot. This
form uses only ops that every TensorRT from 8.6 on imports natively: each kernel tap is
one bilinear GridSample of the input at its offset positions, all taps in one call,
times its modulation mask, then one MatMul with the weight reshaped to [out, in * taps].

It follows torchvision's `deform_conv2d` layout (detectron2's): offsets hold (dy, dx)
per tap, taps in row-major kernel order; samples outside the image read zeros, with the
bilinear weights of the corners inside kept (GridSample's padding_mode "zeros").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _base_positions(out_h: int, out_w: int, kernel_h: int, kernel_w: int, stride: int, padding: int, dilation: int, like: torch.Tensor):
    """Sampling rows and columns [taps, out_h, out_w] before offsets: constants in a
    traced graph (the export size is fixed)."""
    taps_y = torch.arange(kernel_h, dtype=like.dtype, device=like.device).repeat_interleave(kernel_w) * dilation
    taps_x = torch.arange(kernel_w, dtype=like.dtype, device=like.device).repeat(kernel_h) * dilation
    rows = torch.arange(out_h, dtype=like.dtype, device=like.device) * stride - padding
    cols = torch.arange(out_w, dtype=like.dtype, device=like.device) * stride - padding
    base_y = taps_y.view(-1, 1, 1) + rows.view(1, -1, 1)
    base_x = taps_x.view(-1, 1, 1) + cols.view(1, 1, -1)
    taps = kernel_h * kernel_w
    return base_y.expand(taps, out_h, out_w), base_x.expand(taps, out_h, out_w)


def deform_conv2d_grid_sample(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
) -> torch.Tensor:
    """x [B, C, H, W], offset [B, 2*K, Ho, Wo], weight [O, C, kh, kw], mask [B, K, Ho, Wo]
    -> [B, O, Ho, Wo]; one offset group, no weight groups, no bias (the neck's form)."""
    batch, channels, height, width = x.shape
    out_channels, in_channels, kernel_h, kernel_w = weight.shape
    if in_channels != channels:
        raise ValueError(f"weight expects {in_channels} input channels, x has {channels}")
    taps = kernel_h * kernel_w
    out_h, out_w = offset.shape[-2:]
    base_y, base_x = _base_positions(int(out_h), int(out_w), kernel_h, kernel_w, stride, padding, dilation, x)
    offset = offset.view(batch, taps, 2, out_h, out_w)
    y = base_y + offset[:, :, 0]  # [B, K, Ho, Wo], pixel rows
    x_pos = base_x + offset[:, :, 1]
    # pixel index p -> GridSample's [-1, 1] with align_corners=False: (2p + 1) / size - 1
    grid = torch.stack([(2 * x_pos + 1) / width - 1, (2 * y + 1) / height - 1], dim=-1)
    grid = grid.view(batch, taps * out_h, out_w, 2)
    sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.view(batch, channels, taps, out_h, out_w) * mask.view(batch, 1, taps, out_h, out_w)
    columns = sampled.view(batch, channels * taps, out_h * out_w)
    out = torch.matmul(weight.reshape(out_channels, channels * taps), columns)
    return out.view(batch, out_channels, out_h, out_w)
