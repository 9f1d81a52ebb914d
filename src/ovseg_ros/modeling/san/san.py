"""SAN (Side Adapter Network, Xu et al., CVPR 2023): a frozen CLIP ViT and a small side
ViT. Images in, mask logits and each mask's CLIP embedding out (the shared ModelOutput);
comparing with text and the semantic map live outside `forward`, as for the other models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ovseg_ros.config import SANConfig
from ovseg_ros.modeling.clip_towers import build_text_encoder
from ovseg_ros.modeling.clip_vit import CLIPViTFeatures, CLIPViTRecognitionHead
from ovseg_ros.modeling.common import adaptive_max_pool2d
from ovseg_ros.modeling.output import ModelOutput
from ovseg_ros.modeling.san.side_adapter import SideAdapter

MASKED = -100.0  # SAN's additive mask value (not -inf)


def recognition_mask(bias: torch.Tensor, num_queries: int) -> torch.Tensor:
    """The additive attention mask of the recognition blocks, [B, heads, Q+1+L, Q+1+L]:
    a query sees itself and the spatial tokens (with its bias there), no other query and
    not the class token; class and spatial tokens see each other only. bias [B, heads, Q, L]."""
    batch, heads, queries, length = bias.shape
    size = queries + 1 + length
    index = torch.arange(size, device=bias.device)
    base = torch.where(index[None, :] < queries, MASKED, 0.0).to(bias.dtype).expand(size, size).clone()
    base[index[:queries], index[:queries]] = 0.0
    base[:queries, queries] = MASKED
    top = torch.cat([base[None, None, :queries, : queries + 1].expand(batch, heads, -1, -1), bias], dim=-1)
    rest = base[None, None, queries:].expand(batch, heads, -1, -1)
    return torch.cat([top, rest], dim=2)


class SAN(nn.Module):
    family = "san"

    def __init__(self, config: SANConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.clip_features = CLIPViTFeatures(c.clip_width, c.clip_feature_layers, c.clip_heads, c.clip_patch_size, c.clip_image_size)
        self.recognition_head = CLIPViTRecognitionHead(c.clip_width, c.clip_total_layers - c.clip_feature_layers, c.clip_heads,
                                                       c.embed_dim)
        self.side_adapter = SideAdapter(c.clip_width, c.clip_heads, c.fused_layers, c.side_width, c.side_depth, c.side_heads,
                                        c.side_patch_size, c.side_image_size, c.num_queries)
        self.text_encoder = build_text_encoder(c.clip)
        self.background_embedding = nn.Parameter(torch.zeros(1, c.embed_dim))
        self.class_logit_scale = nn.Parameter(torch.tensor(4.6052))  # log(100), OpenAI's
        self.register_buffer("pixel_mean", torch.tensor(c.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(c.pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def void_embedding(self) -> torch.Tensor:
        """The learnt background row, in the place the other models keep their void."""
        return self.background_embedding

    @property
    def clip_logit_scale(self) -> torch.Tensor:
        return self.class_logit_scale  # no CLIP view of the masks (their validity is all False)

    def text_with_background(self, text_embeddings: torch.Tensor) -> torch.Tensor:
        """[K, D] normalised class rows + the learnt background row, all normalised."""
        return F.normalize(torch.cat([text_embeddings, self.background_embedding.to(text_embeddings.dtype)]), dim=-1)

    def forward(self, images: torch.Tensor, text_embeddings: torch.Tensor | None = None, keep_features: bool = False) -> ModelOutput:
        """images: normalised [B, 3, Hp, Wp], Hp and Wp multiples of 32. The text is not
        needed here (as for FC-CLIP): class logits are the mask embeddings against the
        text, clamp(exp(class_logit_scale), 100) x cosine with the background row last,
        computed in post-processing (postprocess.class_logits; CLIP's scale is at most 100,
        so the clamp SAN does not have changes nothing)."""
        c = self.config
        features: dict[str, torch.Tensor] | None = {} if keep_features else None
        clip_input = F.interpolate(images, scale_factor=c.clip_resolution, mode="bilinear", align_corners=False)
        layers, grid = self.clip_features(clip_input)
        batch = images.shape[0]

        def spatial(tokens: torch.Tensor) -> torch.Tensor:
            return tokens[:, 1:].transpose(1, 2).reshape(batch, -1, *grid)

        clip_maps = [spatial(layers[i]) for i in c.fused_layers]
        masks, bias = self.side_adapter(images, clip_maps, features)
        pooled = adaptive_max_pool2d(bias.flatten(1, 2), grid).view(batch, c.clip_heads, c.num_queries, -1)
        last = layers[c.clip_feature_layers]
        tokens = torch.cat([last[:, :1].expand(-1, c.num_queries, -1), last], dim=1)
        embeddings = F.normalize(self.recognition_head(tokens, recognition_mask(pooled, c.num_queries), c.num_queries), dim=-1)
        if features is not None:
            features["clip_input"] = clip_input
            for i in sorted({0, *c.fused_layers}):
                features[f"clip_layer{i}"] = spatial(layers[i])
            features[f"clip_layer{c.clip_feature_layers}_cls"] = last[:, :1]
            features["attn_bias"] = bias
            features["attn_bias_clip"] = pooled.view(batch, -1, *grid)
        return ModelOutput(
            class_embeddings=[embeddings],
            class_logit_scales=[self.class_logit_scale],
            mask_logits=[masks],
            clip_embeddings=torch.zeros_like(embeddings),
            clip_mask_valid=embeddings.new_zeros(embeddings.shape[:2], dtype=torch.bool),
            features=features or {},
        )
