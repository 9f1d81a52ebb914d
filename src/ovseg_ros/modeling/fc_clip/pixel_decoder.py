"""FC-CLIP's pixel decoder (Mask2Former's): a 6-layer multi-scale deformable attention
encoder over res3..res5, plus an FPN step to res2 for the per-pixel mask features."""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ovseg_ros.modeling.fc_clip.ms_deform_attn import MSDeformAttn
from ovseg_ros.modeling.fc_clip.position_encoding import sine_position_encoding


class ConvNorm(nn.Conv2d):
    """Conv without bias, then GroupNorm held as `norm` (detectron2's Conv2d layout)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, groups: int = 32) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.GroupNorm(groups, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class EncoderLayer(nn.Module):
    """Deformable self-attention over all levels, then a ReLU FFN; post-norm."""

    def __init__(self, dim: int = 256, ffn_dim: int = 1024, levels: int = 3, heads: int = 8, points: int = 4) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(dim, levels, heads, points)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, reference_points: torch.Tensor, shapes: list[tuple[int, int]]) -> torch.Tensor:
        x = self.norm1(x + self.self_attn(x + pos, reference_points, x, shapes))
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))


class DeformableEncoder(nn.Module):
    """Holds `encoder.layers` and `level_embed` under the checkpoint's names."""

    def __init__(self, dim: int = 256, layers: int = 6, ffn_dim: int = 1024, levels: int = 3, heads: int = 8) -> None:
        super().__init__()
        self.level_embed = nn.Parameter(torch.zeros(levels, dim))
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(EncoderLayer(dim, ffn_dim, levels, heads) for _ in range(layers))

    def forward(self, sources: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """sources: [B, C, H_l, W_l] per level -> the same shapes, encoded."""
        batch, channels = sources[0].shape[:2]
        shapes = [(int(s.shape[-2]), int(s.shape[-1])) for s in sources]
        tokens = torch.cat([s.flatten(2).transpose(1, 2) for s in sources], dim=1)
        pos = torch.cat(
            [
                sine_position_encoding(batch, h, w, channels // 2, s.device, s.dtype).flatten(2).transpose(1, 2) + self.level_embed[level]
                for level, ((h, w), s) in enumerate(zip(shapes, sources))
            ],
            dim=1,
        )
        reference_points = _reference_points(shapes, batch, sources[0].device, sources[0].dtype)
        for layer in self.encoder.layers:
            tokens = layer(tokens, pos, reference_points, shapes)
        out, start = [], 0
        for h, w in shapes:
            out.append(tokens[:, start : start + h * w].transpose(1, 2).reshape(batch, channels, h, w))
            start += h * w
        return out


def _reference_points(shapes: list[tuple[int, int]], batch: int, device, dtype) -> torch.Tensor:
    """[B, sum(H*W), levels, 2]: each token's pixel centre, (x, y) in [0, 1], repeated for
    every level (no padding, so every valid ratio is 1)."""
    points = []
    for height, width in shapes:
        ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
        grid = torch.stack([xs[None, :].expand(height, width), ys[:, None].expand(height, width)], dim=-1)
        points.append(grid.reshape(-1, 2))
    points = torch.cat(points, dim=0).to(dtype)
    return points[None, :, None, :].expand(batch, -1, len(shapes), -1)


class MSDeformAttnPixelDecoder(nn.Module):
    """res2..res5 -> (mask features [B, mask_dim, H/4, W/4], the three encoded levels at
    strides 32, 16, 8 for the transformer decoder)."""

    def __init__(self, in_channels: Sequence[int], dim: int = 256, mask_dim: int = 256, layers: int = 6) -> None:
        super().__init__()
        c2, c3, c4, c5 = in_channels
        self.input_proj = nn.ModuleList(
            nn.Sequential(OrderedDict([("0", nn.Conv2d(c, dim, 1)), ("1", nn.GroupNorm(32, dim))])) for c in (c5, c4, c3)
        )
        self.transformer = DeformableEncoder(dim, layers)
        self.mask_features = nn.Conv2d(dim, mask_dim, 1)
        self.adapter_1 = ConvNorm(c2, dim, 1)
        self.layer_1 = ConvNorm(dim, dim, 3)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Always in fp32, as published (deformable attention's sampling is not half-safe)."""
        res2, res3, res4, res5 = (f.float() for f in features)
        with torch.autocast(device_type=res2.device.type, enabled=False):
            levels = self.transformer([proj(x) for proj, x in zip(self.input_proj, (res5, res4, res3))])
            lateral = self.adapter_1(res2)
            top_down = F.interpolate(levels[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            fpn = F.relu(self.layer_1(lateral + top_down))
            return self.mask_features(fpn), levels
