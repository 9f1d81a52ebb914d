"""The cost volume: cosine similarity of every pixel's CLIP embedding with every
(class, template) text feature."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cost_volume(dense_embeddings: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """dense_embeddings [B, D, H, W], text_features [K, T, D] -> cosines [B, K, T, H, W].

    Class-major, so that [B * K, T, H, W] is one template-channel map per (image, class),
    what the decoder's per-class convolutions take. The published model keeps CLIP's
    logit scale out of it: plain cosines. (The official tensor is laid out [B, T, K, H, W].)
    """
    image = F.normalize(dense_embeddings, dim=1)
    text = F.normalize(text_features, dim=-1)
    return torch.einsum("bdhw,ktd->bkthw", image, text)
