"""What both networks (EOV-Seg, FC-CLIP) return, so engines, export and post-processing
treat them alike."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class ModelOutput:
    """Network outputs for a padded batch [B, 3, Hp, Wp]; Q queries, D text dims.

    class_embeddings: per prediction (EOV-Seg: 3 stages; FC-CLIP: the learnt queries and
        9 layers) [B, Q, D], to be compared with text embeddings.
    class_logit_scales: per prediction, scalar log temperature of that comparison.
    mask_logits: per prediction [B, Q, Hp/4, Wp/4].
    clip_embeddings: [B, Q, D] CLIP's own embedding of each final mask (out of vocabulary).
    clip_mask_valid: [B, Q] whether that mask had any pixel at CLIP's resolution.
    features: intermediate maps, filled only when asked for (for debugging and parity).
    """

    class_embeddings: list[torch.Tensor]
    class_logit_scales: list[torch.Tensor]
    mask_logits: list[torch.Tensor]
    clip_embeddings: torch.Tensor
    clip_mask_valid: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)


def append_void(text_embeddings: torch.Tensor, void_embedding: torch.Tensor) -> torch.Tensor:
    """[T, D] text rows + the learnt void embedding (normalised) as the last row."""
    return torch.cat([text_embeddings, F.normalize(void_embedding, dim=-1)], dim=0)


def clip_view_of_masks(image_encoder, clip_features: torch.Tensor, mask_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The out-of-vocabulary branch: final masks resized to CLIP's dense features, CLIP's
    embedding of each, and whether each mask has any pixel there.
    Returns (embeddings [B, Q, D], valid [B, Q], resized masks [B, Q, h, w])."""
    masks = F.interpolate(mask_logits, size=clip_features.shape[-2:], mode="bilinear", align_corners=False)
    return image_encoder.embed_masks(clip_features, masks), masks.flatten(2).amax(-1) > 0, masks  # any pixel > 0, as a float max (exports to ReduceMax)
