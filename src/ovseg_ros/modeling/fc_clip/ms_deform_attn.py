"""Multi-scale deformable attention (Deformable DETR), written with `grid_sample`: no
compiled op, so it runs anywhere torch does and exports to ONNX (GridSample)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MSDeformAttn(nn.Module):
    """Each query attends to `points` sampled locations per head and level, around its
    reference point, with learnt offsets and softmax weights."""

    def __init__(self, dim: int = 256, levels: int = 3, heads: int = 8, points: int = 4) -> None:
        super().__init__()
        self.dim, self.levels, self.heads, self.points = dim, levels, heads, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)

    def forward(
        self, query: torch.Tensor, reference_points: torch.Tensor, value: torch.Tensor, shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        """query [B, Q, C]; reference_points [B, Q, levels, 2] as (x, y) in [0, 1];
        value [B, sum(H*W), C] of the levels of `shapes` [(H, W), ...] -> [B, Q, C]."""
        batch, num_queries, _ = query.shape
        head_dim = self.dim // self.heads
        values = self.value_proj(value).view(batch, -1, self.heads, head_dim)
        offsets = self.sampling_offsets(query).view(batch, num_queries, self.heads, self.levels, self.points, 2)
        weights = self.attention_weights(query).view(batch, num_queries, self.heads, self.levels * self.points).softmax(-1)
        normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)  # (x, y) per level
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        grids = 2 * locations - 1  # grid_sample's [-1, 1], align_corners=False

        sampled = []
        start = 0
        for level, (height, width) in enumerate(shapes):
            level_values = values[:, start : start + height * width]  # [B, HW, heads, d]
            start += height * width
            level_values = level_values.permute(0, 2, 3, 1).reshape(batch * self.heads, head_dim, height, width)
            grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # [B*heads, Q, points, 2]
            sampled.append(F.grid_sample(level_values, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
        stacked = torch.stack(sampled, dim=-2).flatten(-2)  # [B*heads, d, Q, levels*points]
        weights = weights.transpose(1, 2).reshape(batch * self.heads, 1, num_queries, self.levels * self.points)
        out = (stacked * weights).sum(-1).view(batch, self.heads * head_dim, num_queries).transpose(1, 2)
        return self.output_proj(out)
