"""The light decoder: 100 query kernels refined in three stages, each predicting masks
(kernel . pixel embedding) and class embeddings (compared with text outside)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ovseg_ros.modeling.common import MLP, LayerNorm2d, mask_pool
from ovseg_ros.modeling.eov_seg.vas import VocabularyAwareSelection


class DynamicChannelConv(nn.Module):
    """Each query convolves its own feature vector along channels with a K-tap kernel
    predicted from the query, then LayerNorm.

    The published form runs a grouped conv1d once per image. Here the same
    cross-correlation is K shifted multiply-adds over the whole batch: no Python loop,
    and no batch-size-dependent `groups` baked into an exported graph.
    """

    def __init__(self, dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError("kernel_size must be odd")
        self.kernel_size = kernel_size
        self.weight_linear = nn.Linear(dim, kernel_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, query: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """query, value: [B, N, C] -> [B, N, C]."""
        taps = self.weight_linear(query)  # [B, N, K]
        pad = self.kernel_size // 2
        channels = value.shape[-1]
        padded = F.pad(value, (pad, pad))
        out = taps[..., 0:1] * padded[..., 0:channels]
        for k in range(1, self.kernel_size):
            out = out + taps[..., k : k + 1] * padded[..., k : k + channels]
        return self.norm(out)


class TwoWayExperts(nn.Module):
    """Two-way Dynamic Embedding Experts: mixes the query's mask-pooled embedding with
    the ViT's spatial embedding through routers conditioned on both."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        self.dim = dim
        self.dynamic_layer = nn.Linear(dim, 2 * dim)
        self.input_layer = nn.Linear(dim, 2 * dim)
        self.input_router = nn.Linear(dim, dim)
        self.update_router = nn.Linear(dim, dim)
        self.norm_in = nn.LayerNorm(dim)
        self.norm_out = nn.LayerNorm(dim)
        self.input_norm_in = nn.LayerNorm(dim)
        self.input_norm_out = nn.LayerNorm(dim)
        self.fc_layer = nn.Linear(dim, dim)
        self.fc_norm = nn.LayerNorm(dim)

    def forward(self, update: torch.Tensor, spatial: torch.Tensor) -> torch.Tensor:
        param_in, param_out = self.dynamic_layer(update).split(self.dim, dim=-1)
        input_in, input_out = self.input_layer(spatial).split(self.dim, dim=-1)
        routed = input_in * param_in
        update_gate = self.norm_in(self.update_router(routed)).sigmoid()
        input_gate = self.input_norm_in(self.input_router(routed)).sigmoid()
        mixed = update_gate * self.norm_out(param_out) + input_gate * self.input_norm_out(input_out)
        return F.gelu(self.fc_norm(self.fc_layer(mixed)))


class FFN(nn.Module):
    """Residual two-layer MLP; the odd nesting keeps the checkpoint's key names."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True)), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class DecoderStage(nn.Module):
    """One refinement stage: pool pixels under the previous masks, mix queries, predict."""

    def __init__(self, dim: int = 256, vit_dim: int = 768, text_dim: int = 1024, heads: int = 8, ffn_dim: int = 2048, kernel_size: int = 3) -> None:
        super().__init__()
        self.tdee = TwoWayExperts(dim)
        self.f_atten = DynamicChannelConv(dim, kernel_size)
        self.f_atten_norm = nn.LayerNorm(dim)
        self.k_atten = DynamicChannelConv(dim, kernel_size)
        self.k_atten_norm = nn.LayerNorm(dim)
        self.s_atten = nn.MultiheadAttention(dim, heads)  # sequence first, as published
        self.s_atten_norm = nn.LayerNorm(dim)
        self.ffn = FFN(dim, ffn_dim)
        self.ffn_norm = nn.LayerNorm(dim)
        self.mask_fcs = nn.Sequential(nn.Linear(dim, dim, bias=False), nn.LayerNorm(dim), nn.ReLU(inplace=True))
        self.fc_mask = nn.Linear(dim, dim)
        self._mask_pooling_proj = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
        self._spatial_mask_pooling_proj = nn.Sequential(nn.LayerNorm(vit_dim), nn.Linear(vit_dim, dim))
        self.class_embed = MLP(dim, dim, text_dim, 3)
        self.logit_scale = nn.Parameter(torch.tensor(2.6592600369644165))  # log(1 / 0.07)

    def forward(
        self, pixels: torch.Tensor, vit_pixels: torch.Tensor, kernels: torch.Tensor, mask_logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """pixels [B, C, H, W], vit_pixels [B, Cv, H, W], kernels [B, N, C], mask_logits [B, N, H, W]
        -> (class embeddings [B, N, D], new mask logits [B, N, H, W], new kernels [B, N, C])."""
        hard_masks = (mask_logits.sigmoid() > 0.5).to(pixels.dtype)
        pooled = torch.einsum("bnhw,bchw->bnc", hard_masks, pixels)  # a sum, not a mean

        pooled = self.f_atten_norm(pooled + self.f_atten(kernels, pooled))
        kernels = self.k_atten_norm(pooled + self.k_atten(kernels, pooled))
        seq = kernels.transpose(0, 1)
        kernels = self.s_atten_norm((seq + self.s_atten(seq, seq, seq, need_weights=False)[0]).transpose(0, 1))
        queries = self.ffn_norm(self.ffn(kernels))

        mask_kernels = self.fc_mask(self.mask_fcs(queries))
        new_mask_logits = torch.einsum("bqc,bchw->bqhw", mask_kernels, pixels)

        pooled_pixels = self._mask_pooling_proj(mask_pool(pixels, new_mask_logits))
        pooled_vit = self._spatial_mask_pooling_proj(mask_pool(vit_pixels, new_mask_logits))
        class_embeddings = self.class_embed(self.tdee(pooled_pixels, pooled_vit) + queries)
        return class_embeddings, new_mask_logits, queries


class LightDecoder(nn.Module):
    def __init__(self, num_queries: int = 100, dim: int = 256, vit_dim: int = 768, text_dim: int = 1024, num_stages: int = 3) -> None:
        super().__init__()
        self.object_kernels = nn.Embedding(num_queries, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(vit_dim, vit_dim, 2, stride=2),
            LayerNorm2d(vit_dim),
            nn.GELU(),
            nn.ConvTranspose2d(vit_dim, vit_dim, 2, stride=2),
            nn.GELU(),
        )
        self.vas = VocabularyAwareSelection(dim, text_dim)
        self.mask_heads = nn.ModuleList(DecoderStage(dim, vit_dim, text_dim) for _ in range(num_stages))

    def forward(
        self, pixels: torch.Tensor, vit_tokens: torch.Tensor, text: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """pixels [B, C, H/4, W/4], vit_tokens [B, Cv, H/16, W/16], text [T, D] (void included)
        -> per-stage class embeddings, per-stage mask logits, the VAS-gated pixels."""
        pixels = self.vas(pixels, text)
        kernels = self.object_kernels.weight.unsqueeze(0).expand(pixels.shape[0], -1, -1)
        mask_logits = torch.einsum("bnc,bchw->bnhw", kernels, pixels)
        vit_pixels = self.output_upscaling(vit_tokens)
        class_embeddings, all_masks = [], []
        for stage in self.mask_heads:
            embeddings, mask_logits, kernels = stage(pixels, vit_pixels, kernels, mask_logits)
            class_embeddings.append(embeddings)
            all_masks.append(mask_logits)
        return class_embeddings, all_masks, pixels
