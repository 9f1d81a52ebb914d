"""The frozen CLIP both models build on: its image tower (OpenAI's ResNets or a LAION
ConvNeXt) and its text tower, from one CLIPConfig."""

from __future__ import annotations

import torch
from torch import nn

from ovseg_ros.config import CLIPConfig
from ovseg_ros.modeling.clip_convnext import CLIPConvNeXt
from ovseg_ros.modeling.clip_resnet import CLIPResNet
from ovseg_ros.modeling.clip_text import CLIPTextEncoder


def build_image_encoder(clip: CLIPConfig) -> nn.Module:
    """res2..res5 for dense prediction, and `embed_masks` for CLIP's view of a mask."""
    if clip.kind == "convnext":
        return CLIPConvNeXt(clip.timm_name, clip.embed_dim)
    return CLIPResNet(clip.layers, clip.width, clip.embed_dim, clip.heads, clip.image_size)


def build_text_encoder(clip: CLIPConfig) -> CLIPTextEncoder:
    return CLIPTextEncoder(
        clip.vocab_size, clip.context_length, clip.text_width, clip.text_layers, clip.text_heads, clip.embed_dim, clip.quick_gelu
    )


def add_clip_towers(network: nn.Module, clip: CLIPConfig) -> None:
    """Give a network its CLIP: `image_encoder`, `text_encoder` and `clip_logit_scale`
    (CLIP's own, log 100 at init), under the names both models' checkpoints map to."""
    network.image_encoder = build_image_encoder(clip)
    network.text_encoder = build_text_encoder(clip)
    network.clip_logit_scale = nn.Parameter(torch.tensor(4.6052))
