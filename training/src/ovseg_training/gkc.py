"""GKC's two training options (Han et al., "Global Knowledge Calibration for Fast
Open-Vocabulary Segmentation", ICCV 2023), written from the paper's description; its code
is non-commercial and is not used.

Text diversification: a class is trained under several names (the published synonym
lists), and each segment sees one of them, drawn afresh every step, so the learnt
embedding does not collapse onto one name.

Text-guided knowledge distillation: each matched query's embedding is pulled toward
frozen CLIP's embedding of its ground-truth region, weighted by how well CLIP itself
recognises that region as its class from the text (where CLIP's view disagrees with the
text it is a poor teacher); a relational term keeps the pairwise similarities of an
image's segments those of CLIP's region embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ovseg_ros.postprocess import class_logits


def diversified_class_logits(
    embeddings: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, synonyms_per_class: torch.Tensor,
    draws: torch.Tensor,
) -> torch.Tensor:
    """Cosine logits where every class is named, for each query, by one of its synonyms.

    embeddings [B, Q, D]; text [S + 1, D]: every class's synonym rows, class after class,
    void last; synonyms_per_class [C] (sums to S); draws [B, Q, C] uniform in [0, 1):
    which synonym each query sees for each class. -> [B, Q, C + 1], void last.
    """
    scale = logit_scale.exp().clamp(max=100)
    logits = scale * F.normalize(embeddings, dim=-1) @ text.t()
    per_row, void = logits[..., :-1], logits[..., -1:]
    counts = synonyms_per_class.to(logits.device)
    first_row = counts.cumsum(0) - counts
    pick = first_row + torch.minimum((draws.to(logits.device) * counts).long(), counts - 1)
    return torch.cat([per_row.gather(-1, pick), void], dim=-1)


@torch.no_grad()
def clip_region_targets(
    image_encoder, clip_features: torch.Tensor, masks: list[torch.Tensor], labels: list[torch.Tensor],
    text: torch.Tensor, clip_logit_scale: torch.Tensor, class_index: torch.Tensor, num_classes: int,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Frozen CLIP's embedding of every ground-truth region and its text-guided weight.

    clip_features: CLIP's last dense map [B, C, h, w]; masks per image [N, H, W]; text
    [S + 1, D] with void last. The region is the mask at CLIP's resolution (pixels covered
    at least half as much as the mask's best-covered one, so a small region keeps a
    pixel); the weight is CLIP's probability of the region's class among the classes
    (best synonym per class), 0 for a region the crop emptied.
    Returns per image (embeddings [N, D] normalised, weights [N]).
    """
    targets = []
    for b, (image_masks, image_labels) in enumerate(zip(masks, labels)):
        if image_masks.shape[0] == 0:
            targets.append((clip_features.new_zeros(0, text.shape[1]), clip_features.new_zeros(0)))
            continue
        cover = F.interpolate(image_masks[None].float(), size=clip_features.shape[-2:], mode="area")[0]
        best = cover.flatten(1).amax(-1)
        region_logits = cover - 0.5 * best[:, None, None]  # > 0 inside
        region = F.normalize(image_encoder.embed_masks(clip_features[b : b + 1], region_logits[None])[0].float(), dim=-1)
        probs = class_logits(region[None], text, clip_logit_scale, class_index, num_classes)[0, :, :-1].softmax(-1)
        weights = probs.gather(1, image_labels[:, None].long())[:, 0] * (best > 0)
        targets.append((region, weights))
    return targets


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor, num_masks: float) -> torch.Tensor:
    """sum_i w_i * || s_i - t_i ||_1 / num_masks, on normalised embeddings [N, D]
    (L1 on region embeddings, as ViLD distils CLIP's; weighted by the text guidance)."""
    distance = (F.normalize(student.float(), dim=-1) - teacher).abs().sum(-1)
    return (weights * distance).sum() / num_masks


def relation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over ordered pairs i != j of one image's segments of
    | cos(s_i, s_j) - cos(t_i, t_j) |; zero with fewer than two segments."""
    n = student.shape[0]
    if n < 2:
        return student.sum() * 0.0
    s = F.normalize(student.float(), dim=-1)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=s.device)
    return ((s @ s.t() - teacher @ teacher.t()).abs() * off_diagonal).sum() / (n * (n - 1))
