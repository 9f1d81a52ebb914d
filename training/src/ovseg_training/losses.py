"""The EOV-Seg training objective, applied to every decoder stage: classification
against text (void down-weighted), point-sampled sigmoid BCE and dice on matched masks;
with GKC's distillation on, its two terms on the matched queries' embeddings too."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ovseg_training.config import GKCConfig, LossConfig
from ovseg_training.gkc import distillation_loss, relation_loss
from ovseg_training.matcher import hungarian_match
from ovseg_training.points import point_sample, uncertain_points


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


class SetCriterion:
    def __init__(self, num_classes: int, config: LossConfig = LossConfig(), gkc: GKCConfig | None = None) -> None:
        self.num_classes = num_classes
        self.config = config
        self.gkc = gkc or GKCConfig()
        self.class_weights = torch.ones(num_classes + 1)
        self.class_weights[-1] = config.no_object_weight

    def stage_losses(self, class_logits, mask_logits, labels, masks, num_masks: float, embeddings=None,
                     regions=None) -> dict[str, torch.Tensor]:
        """regions: per image, frozen CLIP's (embeddings, weights) of its ground-truth
        segments (gkc.clip_region_targets); with the stage's query embeddings, the
        distillation terms are added."""
        cfg = self.config
        matches = hungarian_match(class_logits, mask_logits, labels, masks, cfg.class_weight, cfg.mask_weight, cfg.dice_weight, cfg.num_points)
        device = class_logits.device
        target_classes = torch.full(class_logits.shape[:2], self.num_classes, dtype=torch.long, device=device)
        for b, (rows, cols) in enumerate(matches):
            target_classes[b, rows.to(device)] = labels[b].to(device)[cols.to(device)]
        loss_ce = F.cross_entropy(class_logits.float().transpose(1, 2), target_classes, self.class_weights.to(device))

        predicted = torch.cat([mask_logits[b, rows.to(device)] for b, (rows, _) in enumerate(matches)])
        target = torch.cat([masks[b][cols].to(device) for b, (_, cols) in enumerate(matches)]).float()
        losses = {"loss_ce": loss_ce}
        if regions is not None:
            losses.update(self.distillation_losses(embeddings, regions, matches, num_masks))
        if predicted.shape[0] == 0:
            zero = mask_logits.sum() * 0.0
            return {**losses, "loss_mask": zero, "loss_dice": zero}
        predicted = predicted.unsqueeze(1).float()
        with torch.no_grad():
            coords = uncertain_points(predicted, cfg.num_points, cfg.oversample_ratio, cfg.importance_sample_ratio)
            point_targets = point_sample(target.unsqueeze(1), coords)[:, 0]
        point_logits = point_sample(predicted, coords)[:, 0]
        loss_mask = F.binary_cross_entropy_with_logits(point_logits, point_targets, reduction="none").mean(1).sum() / num_masks
        return {**losses, "loss_mask": loss_mask, "loss_dice": dice_loss(point_logits, point_targets, num_masks)}

    @staticmethod
    def distillation_losses(embeddings, regions, matches, num_masks: float) -> dict[str, torch.Tensor]:
        """GKC's terms over the matched (query, segment) pairs: the text-weighted pull toward
        CLIP's region embedding (per segment, over the batch's segments) and the relational
        term (per image with two or more segments, averaged over those images)."""
        device = embeddings.device
        student = [embeddings[b, rows.to(device)] for b, (rows, _) in enumerate(matches)]
        teacher = [regions[b][0][cols.to(device)] for b, (_, cols) in enumerate(matches)]
        weights = [regions[b][1][cols.to(device)] for b, (_, cols) in enumerate(matches)]
        distill = distillation_loss(torch.cat(student), torch.cat(teacher), torch.cat(weights), num_masks)
        related = [relation_loss(s, t) for s, t in zip(student, teacher) if s.shape[0] > 1]
        relation = torch.stack(related).mean() if related else embeddings.sum() * 0.0
        return {"loss_distill": distill, "loss_relation": relation}

    def __call__(self, stages_class_logits, stages_mask_logits, labels, masks, stages_embeddings=None,
                 regions=None) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted sum over stages and the per-term values (for logging)."""
        device = stages_class_logits[0].device
        num_masks = torch.tensor(float(sum(len(x) for x in labels)), device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(num_masks)
            num_masks = num_masks / dist.get_world_size()
        num_masks = max(float(num_masks), 1.0)
        weights = {"loss_ce": self.config.class_weight, "loss_mask": self.config.mask_weight, "loss_dice": self.config.dice_weight,
                   "loss_distill": self.gkc.distill_weight, "loss_relation": self.gkc.relation_weight}
        total, logged = 0.0, {}
        stages_embeddings = stages_embeddings or [None] * len(stages_class_logits)
        for stage, (cls, msk, emb) in enumerate(zip(stages_class_logits, stages_mask_logits, stages_embeddings)):
            for name, value in self.stage_losses(cls, msk, labels, masks, num_masks, emb, regions).items():
                total = total + weights[name] * value
                logged[f"s{stage}_{name}"] = float(value.detach())
        return total, logged
