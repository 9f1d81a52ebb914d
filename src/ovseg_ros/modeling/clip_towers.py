"""The frozen CLIP both models build on: its image tower (OpenAI's ResNets or a LAION
ConvNeXt) and its text tower, from one CLIPConfig."""

from __future__ import annotations

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
