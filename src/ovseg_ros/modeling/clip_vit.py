"""The image tower of an OpenAI ViT CLIP, split where SAN splits it: the first blocks
give dense features (every layer's tokens kept), the last blocks recognise masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ovseg_ros.modeling.common import ResidualAttentionBlock


def resize_positions(grid_embedding: torch.Tensor, grid: int, height: int, width: int) -> torch.Tensor:
    """A [grid*grid, C] positional grid resampled to [height*width, C] (bicubic, as SAN
    and timm resample ViT positions), or as it is when the sizes agree."""
    if (height, width) == (grid, grid):
        return grid_embedding
    channels = grid_embedding.shape[-1]
    image = grid_embedding.reshape(1, grid, grid, channels).permute(0, 3, 1, 2)
    image = F.interpolate(image, size=(height, width), mode="bicubic", align_corners=False)
    return image.permute(0, 2, 3, 1).reshape(height * width, channels)


class CLIPViTFeatures(nn.Module):
    """Patch embedding, class token, positions, ln_pre and the first `layers` blocks.

    Returns every layer's tokens (layer 0: after ln_pre), batch first [B, 1 + h*w, C],
    and the patch grid (h, w)."""

    def __init__(self, width: int, layers: int, heads: int, patch_size: int, image_size: int) -> None:
        super().__init__()
        self.grid = image_size // patch_size
        self.conv1 = nn.Conv2d(3, width, patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(self.grid * self.grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], tuple[int, int]]:
        x = self.conv1(images)
        batch, channels, height, width = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(batch, 1, channels)
        positions = torch.cat([self.positional_embedding[:1],
                               resize_positions(self.positional_embedding[1:], self.grid, height, width)])
        x = self.ln_pre(torch.cat([cls, x], dim=1) + positions)
        layers = [x]
        for block in self.resblocks:
            x = block(x)
            layers.append(x)
        return layers, (height, width)


class CLIPViTRecognitionHead(nn.Module):
    """CLIP's last blocks, ln_post and projection, run on [queries ; class token ;
    spatial tokens] under an additive attention mask; returns the queries' embeddings."""

    def __init__(self, width: int, layers: int, heads: int, output_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, output_dim))

    def forward(self, tokens: torch.Tensor, attn_mask: torch.Tensor, num_queries: int) -> torch.Tensor:
        """tokens [B, Q + 1 + L, C]; attn_mask [B, heads, Q + 1 + L, Q + 1 + L] -> [B, Q, D]."""
        x = tokens
        for block in self.resblocks:
            x = block(x, attn_mask=attn_mask)
        return self.ln_post(x[:, :num_queries]) @ self.proj
