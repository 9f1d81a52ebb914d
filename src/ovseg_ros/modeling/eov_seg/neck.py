"""YOSO-style neck: modulated deformable convs upsample res5 down to stride 4, with
lateral connections, summed into one stride-4 map with coordinate channels."""

from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ovseg_ros.modeling.eov_seg.deform_conv import deform_conv2d_grid_sample


@functools.cache
def _deform_conv2d():
    """torchvision's op, imported when a model is built rather than with this module:
    torchvision takes seconds to import, and the CLI's input checks come before that
    (the import must not happen inside a traced forward either)."""
    from torchvision.ops import deform_conv2d

    return deform_conv2d


class ModulatedDeformConv(nn.Module):
    """DCNv2 3x3 convolution without bias (torchvision's op has detectron2's layout)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        _deform_conv2d()
        self.padding = padding
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor, offset: torch.Tensor, modulation: torch.Tensor) -> torch.Tensor:
        """Always in fp32 (torchvision has no bf16 kernel on CPU; bilinear sampling
        offsets lose precision in half): casts are no-ops for fp32 inputs and exports.
        Exported as GridSample + MatMul (deform_conv.py), which every TensorRT imports."""
        if torch.onnx.is_in_onnx_export():
            return deform_conv2d_grid_sample(x, offset, self.weight, modulation, padding=self.padding)
        dtype = x.dtype
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = _deform_conv2d()(x.float(), offset.float(), self.weight.float(), padding=self.padding, mask=modulation.float())
        return out.to(dtype)


class DeformUpsample(nn.Module):
    """Deformable conv + BN + ReLU, then a 2x transposed conv + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.dcn_offset = nn.Conv2d(in_channels, 27, 3, padding=1)
        self.dcn = ModulatedDeformConv(in_channels, out_channels)
        self.dcn_bn = nn.BatchNorm2d(out_channels)
        self.up_sample = nn.ConvTranspose2d(out_channels, out_channels, 4, stride=2, padding=1, bias=False)
        self.up_bn = nn.BatchNorm2d(out_channels)
        nn.init.zeros_(self.dcn_offset.weight)
        nn.init.zeros_(self.dcn_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset_and_mask = self.dcn_offset(x)
        offset, modulation = offset_and_mask[:, :18], offset_and_mask[:, 18:].sigmoid()
        x = F.relu(self.dcn_bn(self.dcn(x, offset, modulation)))
        return F.relu(self.up_bn(self.up_sample(x)))


class LiteNeck(nn.Module):
    """res2..res5 -> one [B, hidden_dim, H/4, W/4] pixel embedding map."""

    def __init__(self, in_channels: Sequence[int] = (256, 512, 1024, 2048), agg_dim: int = 128, hidden_dim: int = 256) -> None:
        super().__init__()
        c2, c3, c4, c5 = in_channels
        self.lateral_conv0 = nn.Conv2d(c5, c5 // 2, 1)
        self.deform_conv1 = DeformUpsample(c5 // 2, c4 // 2)
        self.lateral_conv1 = nn.Conv2d(c4, c4 // 2, 1)
        self.deform_conv2 = DeformUpsample(c4 // 2, c3 // 2)
        self.lateral_conv2 = nn.Conv2d(c3, c3 // 2, 1)
        self.deform_conv3 = DeformUpsample(c3 // 2, c2 // 2)
        self.lateral_conv3 = nn.Conv2d(c2, c2 // 2, 1)
        self.conv_a5 = nn.Conv2d(c5 // 2, agg_dim, 1, bias=False)
        self.conv_a4 = nn.Conv2d(c4 // 2, agg_dim, 1, bias=False)
        self.conv_a3 = nn.Conv2d(c3 // 2, agg_dim, 1, bias=False)
        self.conv_a2 = nn.Conv2d(c2 // 2, agg_dim, 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(1, agg_dim, 1, 1))
        self.output_conv = nn.Conv2d(agg_dim, agg_dim, 3, padding=1)
        self.loc_conv = nn.Conv2d(agg_dim + 2, hidden_dim, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        res2, res3, res4, res5 = features
        x5 = self.lateral_conv0(res5)
        x4 = self.lateral_conv1(res4) + self.deform_conv1(x5)
        x3 = self.lateral_conv2(res3) + self.deform_conv2(x4)
        x2 = self.lateral_conv3(res2) + self.deform_conv3(x3)
        x = (
            _upsample(self.conv_a5(x5), 8)
            + _upsample(self.conv_a4(x4), 4)
            + _upsample(self.conv_a3(x3), 2)
            + self.conv_a2(x2)
            + self.bias
        )
        x = self.output_conv(x)
        return self.loc_conv(torch.cat([x, coordinate_channels(x)], dim=1))


def _upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def coordinate_channels(x: torch.Tensor) -> torch.Tensor:
    """[B, 2, H, W]: x then y, each spanning [-1, 1] (CoordConv)."""
    batch, _, height, width = x.shape
    xs = torch.linspace(-1, 1, width, device=x.device, dtype=x.dtype)
    ys = torch.linspace(-1, 1, height, device=x.device, dtype=x.dtype)
    grid_x = xs.view(1, 1, 1, width).expand(batch, 1, height, width)
    grid_y = ys.view(1, 1, height, 1).expand(batch, 1, height, width)
    return torch.cat([grid_x, grid_y], dim=1)
