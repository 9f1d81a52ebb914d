"""The EOV-Seg training objective, applied to every decoder stage: classification
against text (void down-weighted), point-sampled sigmoid BCE and dice on matched masks."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ovseg_training.config import LossConfig
from ovseg_training.matcher import hungarian_match
from ovseg_training.points import point_sample, uncertain_points


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


class SetCriterion:
    def __init__(self, num_classes: int, config: LossConfig = LossConfig()) -> None:
        self.num_classes = num_classes
        self.config = config
        self.class_weights = torch.ones(num_classes + 1)
        self.class_weights[-1] = config.no_object_weight

    def stage_losses(self, class_logits, mask_logits, labels, masks, num_masks: float) -> dict[str, torch.Tensor]:
        cfg = self.config
        matches = hungarian_match(class_logits, mask_logits, labels, masks, cfg.class_weight, cfg.mask_weight, cfg.dice_weight, cfg.num_points)
        device = class_logits.device
        target_classes = torch.full(class_logits.shape[:2], self.num_classes, dtype=torch.long, device=device)
        for b, (rows, cols) in enumerate(matches):
            target_classes[b, rows.to(device)] = labels[b].to(device)[cols.to(device)]
        loss_ce = F.cross_entropy(class_logits.float().transpose(1, 2), target_classes, self.class_weights.to(device))

        predicted = torch.cat([mask_logits[b, rows.to(device)] for b, (rows, _) in enumerate(matches)])
        target = torch.cat([masks[b][cols].to(device) for b, (_, cols) in enumerate(matches)]).float()
        if predicted.shape[0] == 0:
            zero = mask_logits.sum() * 0.0
            return {"loss_ce": loss_ce, "loss_mask": zero, "loss_dice": zero}
        predicted = predicted.unsqueeze(1).float()
        with torch.no_grad():
            coords = uncertain_points(predicted, cfg.num_points, cfg.oversample_ratio, cfg.importance_sample_ratio)
            point_targets = point_sample(target.unsqueeze(1), coords)[:, 0]
        point_logits = point_sample(predicted, coords)[:, 0]
        loss_mask = F.binary_cross_entropy_with_logits(point_logits, point_targets, reduction="none").mean(1).sum() / num_masks
        return {"loss_ce": loss_ce, "loss_mask": loss_mask, "loss_dice": dice_loss(point_logits, point_targets, num_masks)}

    def __call__(self, stages_class_logits, stages_mask_logits, labels, masks) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted sum over stages and the per-term values (for logging)."""
        device = stages_class_logits[0].device
        num_masks = torch.tensor(float(sum(len(x) for x in labels)), device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(num_masks)
            num_masks = num_masks / dist.get_world_size()
        num_masks = max(float(num_masks), 1.0)
        weights = {"loss_ce": self.config.class_weight, "loss_mask": self.config.mask_weight, "loss_dice": self.config.dice_weight}
        total, logged = 0.0, {}
        for stage, (cls, msk) in enumerate(zip(stages_class_logits, stages_mask_logits)):
            for name, value in self.stage_losses(cls, msk, labels, masks, num_masks).items():
                total = total + weights[name] * value
                logged[f"s{stage}_{name}"] = float(value.detach())
        return total, logged
