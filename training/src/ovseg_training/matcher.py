"""Hungarian matching of predicted masks to ground-truth segments."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from ovseg_training.points import point_sample


def pairwise_sigmoid_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits [Q, P], targets [T, P] -> mean BCE of every (query, target) pair [Q, T]."""
    points = logits.shape[1]
    positive = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    negative = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (positive @ targets.t() + negative @ (1 - targets).t()) / points


def pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.t()
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


@torch.no_grad()
def hungarian_match(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    labels: list[torch.Tensor],
    masks: list[torch.Tensor],
    class_weight: float = 2.0,
    mask_weight: float = 5.0,
    dice_weight: float = 5.0,
    num_points: int = 12544,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per image (query indices, target indices). class_logits [B, Q, K+1], mask_logits
    [B, Q, h, w], masks[b] [T, H, W] bool; costs on the same random points for both."""
    matches = []
    for b in range(class_logits.shape[0]):
        if labels[b].numel() == 0:
            empty = torch.empty(0, dtype=torch.long)
            matches.append((empty, empty))
            continue
        cost_class = -class_logits[b].float().softmax(-1)[:, labels[b]]
        coords = torch.rand(1, num_points, 2, device=mask_logits.device)
        predicted = point_sample(mask_logits[b : b + 1].float(), coords)[0]  # [Q, P]
        target = point_sample(masks[b].unsqueeze(0).float(), coords)[0]  # [T, P]
        cost = (
            mask_weight * pairwise_sigmoid_bce(predicted, target)
            + class_weight * cost_class
            + dice_weight * pairwise_dice(predicted, target)
        )
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        matches.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
    return matches
