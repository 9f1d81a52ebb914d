"""Sine positional encoding of a feature map's grid (DETR's, normalised to [0, 2 pi]),
used by FC-CLIP's pixel decoder and transformer decoder."""

from __future__ import annotations

import math

import torch


def sine_position_encoding(batch: int, height: int, width: int, num_features: int, device, dtype=torch.float32) -> torch.Tensor:
    """[B, 2 * num_features, H, W]: y then x, each as interleaved sin/cos of the pixel's
    1-based row (column) divided by the height (width), times 2 pi, at geometric frequencies.
    Depends only on the map's size: images have no padding mask here."""
    scale, temperature, eps = 2 * math.pi, 10000.0, 1e-6
    y = torch.arange(1, height + 1, device=device, dtype=torch.float32)
    x = torch.arange(1, width + 1, device=device, dtype=torch.float32)
    y = y / (height + eps) * scale
    x = x / (width + eps) * scale
    steps = torch.arange(num_features, device=device, dtype=torch.float32)
    frequencies = temperature ** (2 * torch.div(steps, 2, rounding_mode="floor") / num_features)
    pos_y = _interleave(y[:, None] / frequencies)  # [H, F]
    pos_x = _interleave(x[:, None] / frequencies)  # [W, F]
    pos = torch.cat(
        [pos_y[:, None, :].expand(height, width, num_features), pos_x[None, :, :].expand(height, width, num_features)], dim=-1
    )
    return pos.permute(2, 0, 1).unsqueeze(0).expand(batch, -1, -1, -1).to(dtype)


def _interleave(angles: torch.Tensor) -> torch.Tensor:
    """[N, F] angles -> sin of the even features and cos of the odd ones, interleaved."""
    return torch.stack([angles[:, 0::2].sin(), angles[:, 1::2].cos()], dim=-1).flatten(1)
