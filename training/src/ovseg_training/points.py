"""Point sampling for mask losses: compare masks at a few thousand points instead of
every pixel; points are drawn partly where the prediction is most uncertain."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """maps [N, C, H, W], coords [N, P, 2] as (x, y) in [0, 1] -> [N, C, P] (bilinear)."""
    grid = 2.0 * coords.unsqueeze(2) - 1.0
    return F.grid_sample(maps, grid, align_corners=False).squeeze(3)


def uncertain_points(logits: torch.Tensor, num_points: int, oversample_ratio: float, importance_ratio: float) -> torch.Tensor:
    """logits [N, 1, H, W] -> coords [N, num_points, 2]: the `importance_ratio` share
    with logits closest to 0 among oversampled candidates, the rest uniform."""
    count = logits.shape[0]
    candidates = torch.rand(count, int(num_points * oversample_ratio), 2, device=logits.device)
    uncertainty = -point_sample(logits, candidates).abs()[:, 0]  # [N, P']
    num_uncertain = int(importance_ratio * num_points)
    chosen = uncertainty.topk(num_uncertain, dim=1).indices
    coords = candidates.gather(1, chosen.unsqueeze(-1).expand(-1, -1, 2))
    if num_points > num_uncertain:
        coords = torch.cat([coords, torch.rand(count, num_points - num_uncertain, 2, device=logits.device)], dim=1)
    return coords
