"""The first block of CLIP ViT-B/16, which EOV-Seg uses for spatial detail."""

from __future__ import annotations

import torch
from torch import nn

from ovseg_ros.modeling.common import ResidualAttentionBlock, interpolate_grid_embedding


class ViTStem(nn.Module):
    """Patch embedding, resampled positional embedding and one transformer block.

    Only block 0 of the ViT is used by EOV-Seg; blocks 1..11 in a checkpoint are skipped.
    """

    def __init__(self, width: int = 768, patch_size: int = 16, heads: int = 12, image_size: int = 224) -> None:
        super().__init__()
        grid = image_size // patch_size
        self.patch_size = patch_size
        self.width = width
        self.conv1 = nn.Conv2d(3, width, patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.block = ResidualAttentionBlock(width, heads)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: [B, 3, H, W] -> [B, width, H/16, W/16]."""
        x = self.conv1(images)
        batch, channels, height, width = x.shape
        x = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        cls = self.class_embedding.to(x.dtype).expand(batch, 1, channels)
        pos = interpolate_grid_embedding(self.positional_embedding[1:], height, width)
        x = torch.cat([cls + self.positional_embedding[:1], x + pos], dim=1)
        x = self.block(self.ln_pre(x))[:, 1:]
        return x.transpose(1, 2).reshape(batch, channels, height, width)
