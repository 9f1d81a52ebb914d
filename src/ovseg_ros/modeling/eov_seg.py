"""The whole EOV-Seg network: image + text embeddings in, mask logits and class
embeddings out. Text encoding and all post-processing live outside `forward`, so the
same forward runs eagerly, under CUDA graphs, or exported to ONNX with any vocabulary."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ovseg_ros.config import EOVSegConfig
from ovseg_ros.modeling.clip_convnext import CLIPConvNeXt
from ovseg_ros.modeling.clip_resnet import CLIPResNet
from ovseg_ros.modeling.clip_text import CLIPTextEncoder
from ovseg_ros.modeling.decoder import LightDecoder
from ovseg_ros.modeling.neck import LiteNeck
from ovseg_ros.modeling.vit_stem import ViTStem


@dataclass
class EOVSegOutput:
    """Network outputs for a padded batch [B, 3, Hp, Wp]; Q queries, D text dims.

    class_embeddings: per stage [B, Q, D] (to be compared with text embeddings).
    class_logit_scales: per stage, scalar log temperature of that comparison.
    mask_logits: per stage [B, Q, Hp/4, Wp/4].
    clip_embeddings: [B, Q, D] CLIP's own embedding of each last-stage mask.
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


class EOVSeg(nn.Module):
    def __init__(self, config: EOVSegConfig) -> None:
        super().__init__()
        self.config = config
        clip = config.clip
        if clip.kind == "convnext":
            self.image_encoder = CLIPConvNeXt(clip.timm_name, clip.embed_dim)
        else:
            self.image_encoder = CLIPResNet(clip.layers, clip.width, clip.embed_dim, clip.heads, clip.image_size)
        self.text_encoder = CLIPTextEncoder(
            clip.vocab_size, clip.context_length, clip.text_width, clip.text_layers, clip.text_heads, clip.embed_dim,
            clip.quick_gelu,
        )
        self.clip_logit_scale = nn.Parameter(torch.tensor(4.6052))
        self.vit_stem = ViTStem(config.vit_width, config.vit_patch_size, config.vit_heads, config.vit_image_size)
        self.neck = LiteNeck(self.image_encoder.channels, config.agg_dim, config.hidden_dim)
        self.decoder = LightDecoder(config.num_queries, config.hidden_dim, config.vit_width, clip.embed_dim, config.num_stages)
        self.void_embedding = nn.Parameter(torch.zeros(1, clip.embed_dim))
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), persistent=False)

    def text_with_void(self, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Append the learnt void embedding (normalised) to [T, D] text embeddings."""
        return append_void(text_embeddings, self.void_embedding)

    def forward(self, images: torch.Tensor, text_embeddings: torch.Tensor, keep_features: bool = False) -> EOVSegOutput:
        """images: normalised [B, 3, Hp, Wp], Hp and Wp multiples of 32.
        text_embeddings: [T, D] normalised rows, one per (class, synonym)."""
        text = self.text_with_void(text_embeddings)
        res = self.image_encoder(images)
        vit_tokens = self.vit_stem(images)
        pixels = self.neck(res)
        class_embeddings, mask_logits, gated_pixels = self.decoder(pixels, vit_tokens, text)

        clip_features = res[-1]
        masks_for_pooling = F.interpolate(mask_logits[-1], size=clip_features.shape[-2:], mode="bilinear", align_corners=False)
        clip_embeddings = self.image_encoder.embed_masks(clip_features, masks_for_pooling)

        features: dict[str, torch.Tensor] = {}
        if keep_features:
            features = dict(zip(("cnn_res2", "cnn_res3", "cnn_res4", "cnn_res5"), res))
            features.update(vit_layer=vit_tokens, neck=pixels, vas=gated_pixels, masks_for_pooling=masks_for_pooling)
        return EOVSegOutput(
            class_embeddings=class_embeddings,
            class_logit_scales=[stage.logit_scale for stage in self.decoder.mask_heads],
            mask_logits=mask_logits,
            clip_embeddings=clip_embeddings,
            clip_mask_valid=(masks_for_pooling > 0).flatten(2).any(-1),
            features=features,
        )
