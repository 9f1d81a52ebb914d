"""The whole EOV-Seg network: image + text embeddings in, mask logits and class
embeddings out. Text encoding and all post-processing live outside `forward`, so the
same forward runs eagerly, under CUDA graphs, or exported to ONNX with any vocabulary."""

from __future__ import annotations

import torch
from torch import nn

from ovseg_ros.config import EOVSegConfig
from ovseg_ros.modeling.clip_towers import add_clip_towers
from ovseg_ros.modeling.eov_seg.decoder import LightDecoder
from ovseg_ros.modeling.eov_seg.neck import LiteNeck
from ovseg_ros.modeling.eov_seg.vit_stem import ViTStem
from ovseg_ros.modeling.output import ModelOutput, append_void, clip_view_of_masks

EOVSegOutput = ModelOutput  # the name earlier code used


class EOVSeg(nn.Module):
    family = "eov_seg"

    def __init__(self, config: EOVSegConfig) -> None:
        super().__init__()
        self.config = config
        clip = config.clip
        add_clip_towers(self, clip)
        self.vit_stem = ViTStem(config.vit_width, config.vit_patch_size, config.vit_heads, config.vit_image_size)
        self.neck = LiteNeck(self.image_encoder.channels, config.agg_dim, config.hidden_dim)
        self.decoder = LightDecoder(config.num_queries, config.hidden_dim, config.vit_width, clip.embed_dim, config.num_stages)
        self.void_embedding = nn.Parameter(torch.zeros(1, clip.embed_dim))
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def class_logit_scale(self) -> torch.Tensor:
        """Log temperature of the final prediction's comparison with text."""
        return self.decoder.mask_heads[-1].logit_scale

    def text_with_void(self, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Append the learnt void embedding (normalised) to [T, D] text embeddings."""
        return append_void(text_embeddings, self.void_embedding)

    def forward(self, images: torch.Tensor, text_embeddings: torch.Tensor, keep_features: bool = False) -> ModelOutput:
        """images: normalised [B, 3, Hp, Wp], Hp and Wp multiples of 32.
        text_embeddings: [T, D] normalised rows, one per (class, synonym)."""
        text = self.text_with_void(text_embeddings)
        res = self.image_encoder(images)
        vit_tokens = self.vit_stem(images)
        pixels = self.neck(res)
        class_embeddings, mask_logits, gated_pixels = self.decoder(pixels, vit_tokens, text)

        clip_embeddings, clip_mask_valid, masks_for_pooling = clip_view_of_masks(self.image_encoder, res[-1], mask_logits[-1])

        features: dict[str, torch.Tensor] = {}
        if keep_features:
            features = dict(zip(("cnn_res2", "cnn_res3", "cnn_res4", "cnn_res5"), res))
            features.update(vit_layer=vit_tokens, neck=pixels, vas=gated_pixels, masks_for_pooling=masks_for_pooling)
        return ModelOutput(
            class_embeddings=class_embeddings,
            class_logit_scales=[stage.logit_scale for stage in self.decoder.mask_heads],
            mask_logits=mask_logits,
            clip_embeddings=clip_embeddings,
            clip_mask_valid=clip_mask_valid,
            features=features,
        )
