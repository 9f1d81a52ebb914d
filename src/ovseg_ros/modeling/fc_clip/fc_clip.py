"""The whole FC-CLIP network: one frozen convolutional CLIP as backbone (and, outside,
as classifier), Mask2Former's pixel decoder and masked-attention decoder, and CLIP's own
view of each mask for the out-of-vocabulary ensemble. Image in, mask logits and class
embeddings out, like EOVSeg; text encoding and post-processing are shared and live
outside `forward`."""

from __future__ import annotations

import torch
from torch import nn

from ovseg_ros.config import FCCLIPConfig
from ovseg_ros.modeling.clip_towers import add_clip_towers
from ovseg_ros.modeling.fc_clip.masked_attention_decoder import MaskedAttentionDecoder
from ovseg_ros.modeling.fc_clip.pixel_decoder import MSDeformAttnPixelDecoder
from ovseg_ros.modeling.output import ModelOutput, append_void, clip_view_of_masks


class FCCLIP(nn.Module):
    family = "fc_clip"

    def __init__(self, config: FCCLIPConfig) -> None:
        super().__init__()
        self.config = config
        clip = config.clip
        add_clip_towers(self, clip)
        self.pixel_decoder = MSDeformAttnPixelDecoder(self.image_encoder.channels, config.hidden_dim, config.mask_dim, config.encoder_layers)
        self.transformer_decoder = MaskedAttentionDecoder(
            config.num_queries, config.hidden_dim, config.heads, config.ffn_dim, config.decoder_layers, config.mask_dim, clip.embed_dim,
        )
        self.void_embedding = nn.Parameter(torch.zeros(1, clip.embed_dim))
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def class_logit_scale(self) -> torch.Tensor:
        return self.transformer_decoder.logit_scale

    def text_with_void(self, text_embeddings: torch.Tensor) -> torch.Tensor:
        return append_void(text_embeddings, self.void_embedding)

    def forward(self, images: torch.Tensor, text_embeddings: torch.Tensor | None = None, keep_features: bool = False) -> ModelOutput:
        """images: normalised [B, 3, Hp, Wp], Hp and Wp multiples of 32. The network does not
        see the vocabulary (`text_embeddings` is accepted for a common interface): class
        embeddings are compared with text in post-processing."""
        res = self.image_encoder(images)
        mask_features, levels = self.pixel_decoder(res)
        class_embeddings, mask_logits = self.transformer_decoder(levels, mask_features)
        clip_embeddings, clip_mask_valid, _ = clip_view_of_masks(self.image_encoder, res[-1], mask_logits[-1])
        features: dict[str, torch.Tensor] = {}
        if keep_features:
            features = dict(zip(("clip_res2", "clip_res3", "clip_res4", "clip_res5"), res))
            features.update(clip_vis_dense=res[-1], pixel_decoder_mask_features=mask_features, out_vocab_pooled=clip_embeddings)
            features.update({f"pixel_decoder_ms{i}": level for i, level in enumerate(levels)})
        return ModelOutput(
            class_embeddings=class_embeddings,
            class_logit_scales=[self.class_logit_scale] * len(class_embeddings),
            mask_logits=mask_logits,
            clip_embeddings=clip_embeddings,
            clip_mask_valid=clip_mask_valid,
            features=features,
        )
