"""CLIP's modified ResNet (RN50, RN50x4, ...): the frozen dense backbone and the
masked attention pooling that classifies mask proposals out of vocabulary."""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ovseg_ros.modeling.common import any_true, interpolate_grid_embedding


class Bottleneck(nn.Module):
    """CLIP's bottleneck: strided by average pooling after the 3x3 conv (anti-aliased)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(
                OrderedDict(
                    [
                        ("-1", nn.AvgPool2d(stride)),
                        ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, bias=False)),
                        ("1", nn.BatchNorm2d(planes * self.expansion)),
                    ]
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        return F.relu(out + identity)


class MaskedAttentionPool(nn.Module):
    """CLIP's attention pooling, restricted to each mask proposal.

    CLIP pools a ResNet feature map with one attention query (mean feature + positional
    embedding). The published EOV-Seg repeats that query once per mask and runs full
    multi-head attention with a boolean mask. Here the query, keys, values and their
    logits are computed once, and only the masked softmax is done per proposal.
    """

    def __init__(self, grid_size: int, embed_dim: int, num_heads: int, output_dim: int) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(grid_size**2 + 1, embed_dim) / embed_dim**0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads

    def forward(self, features: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
        """features: [B, C, H, W]; mask_logits: [B, Q, H, W] (> 0 is inside).

        Returns [B, Q, output_dim]. A proposal with an empty mask attends to every
        position instead of producing NaN (its out-of-vocabulary score is not used).
        """
        batch, channels, height, width = features.shape
        heads = self.num_heads
        tokens = features.flatten(2).transpose(1, 2)  # [B, HW, C]
        spatial_pos = interpolate_grid_embedding(self.positional_embedding[1:], height, width)
        key_value = tokens + spatial_pos
        query = tokens.mean(1, keepdim=True) + self.positional_embedding[:1]  # [B, 1, C]

        q = self.q_proj(query).view(batch, 1, heads, -1).transpose(1, 2)  # [B, h, 1, d]
        k = self.k_proj(key_value).view(batch, -1, heads, channels // heads).transpose(1, 2)
        v = self.v_proj(key_value).view(batch, -1, heads, channels // heads).transpose(1, 2)
        logits = (q * (q.shape[-1] ** -0.5)) @ k.transpose(-1, -2)  # [B, h, 1, HW]

        inside = (mask_logits > 0).flatten(2)  # [B, Q, HW]
        inside = inside | ~any_true(inside, -1, keepdim=True)
        masked = logits.transpose(1, 2).masked_fill(~inside[:, :, None, :], float("-inf"))  # [B, Q, h, HW]
        attn = masked.softmax(-1)
        pooled = torch.einsum("bqhn,bhnd->bqhd", attn, v).reshape(batch, -1, channels)
        return self.c_proj(pooled)


class CLIPResNet(nn.Module):
    """The image tower of a ResNet CLIP, returning res2..res5 for dense prediction."""

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 6, 3),
        width: int = 64,
        output_dim: int = 1024,
        heads: int = 32,
        image_size: int = 224,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)

        inplanes = width
        stages = []
        for i, blocks in enumerate(layers):
            planes = width * 2**i
            stride = 1 if i == 0 else 2
            stage = [Bottleneck(inplanes, planes, stride)]
            inplanes = planes * Bottleneck.expansion
            stage += [Bottleneck(inplanes, planes) for _ in range(1, blocks)]
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

        embed_dim = width * 32
        self.attnpool = MaskedAttentionPool(image_size // 32, embed_dim, heads, output_dim)
        self.channels = [width * 4 * 2**i for i in range(4)]

    def embed_masks(self, res5: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
        """CLIP's own embedding of each mask [B, Q, D] (the out-of-vocabulary branch)."""
        return self.attnpool(res5, mask_logits)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: normalised images [B, 3, H, W], H and W multiples of 32 -> [res2, res3, res4, res5]."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        x = self.avgpool(x)
        res2 = self.layer1(x)
        res3 = self.layer2(res2)
        res4 = self.layer3(res3)
        res5 = self.layer4(res4)
        return [res2, res3, res4, res5]
