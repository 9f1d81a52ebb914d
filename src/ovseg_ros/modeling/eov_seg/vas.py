"""Vocabulary-Aware Selection: gate pixel embeddings by how well they match the vocabulary."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNGELU(nn.Conv2d):
    """Conv without bias, then BatchNorm (held as `norm`, as checkpoints name it), GELU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, groups: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=groups, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.norm(super().forward(x)))


class DepthwiseSeparable(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.depthwise = ConvBNGELU(in_channels, in_channels, 3, groups=in_channels)
        self.pointwise = ConvBNGELU(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class VocabularyAwareSelection(nn.Module):
    """Each pixel's weight is its best softmax match against the text embeddings.

    Pixels that resemble no vocabulary entry are damped before the decoder sees them,
    so a new vocabulary changes which pixels the queries attend to.
    """

    def __init__(self, in_channels: int = 256, text_dim: int = 1024) -> None:
        super().__init__()
        self.embed_conv = DepthwiseSeparable(in_channels, text_dim)
        self.guide_fc = nn.Linear(text_dim, text_dim)
        self.scale = nn.Parameter(torch.ones(1, 1, 1, 1))
        self.offset = nn.Parameter(torch.zeros(1, 1, 1, 1))

    def forward(self, pixels: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """pixels: [B, C, H, W]; text: [T, D] embeddings (void included) -> [B, C, H, W]."""
        batch, _, height, width = pixels.shape
        guide = self.guide_fc(text)  # [T, D]
        embed = self.embed_conv(pixels).flatten(2).transpose(1, 2)  # [B, HW, D]
        affinity = (embed @ guide.t()) * (guide.shape[-1] ** -0.5)  # [B, HW, T]
        weight = affinity.softmax(-1).amax(-1).view(batch, 1, height, width)
        return pixels * (weight * self.scale + self.offset)
