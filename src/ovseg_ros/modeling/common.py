"""Small layers shared by several components."""

from __future__ import annotations

import functools
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class QuickGELU(nn.Module):
    """The sigmoid approximation of GELU that OpenAI's CLIP weights were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW tensor (eps 1e-6, as in SAM's upscaler)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class PackedMultiheadAttention(nn.Module):
    """Multi-head attention with nn.MultiheadAttention's parameter names, batch first.

    Keeping `in_proj_weight`/`out_proj` lets CLIP and EOV-Seg checkpoints load as they
    are, while the forward goes through scaled_dot_product_attention (fused kernels,
    exportable to ONNX) instead of nn.MultiheadAttention's sequence-first API.
    """

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, length, _ = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.view(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]  # each [B, heads, L, head_dim]

    def _merge(self, out: torch.Tensor) -> torch.Tensor:
        batch, _, length, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, self.embed_dim))

    def forward(self, x: torch.Tensor, causal: bool = False, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, L, C] -> [B, L, C] (self-attention). attn_mask: added to the attention
        logits, broadcastable to [B, heads, L, L] (SAN's recognition head)."""
        q, k, v = self._project(x)
        return self._merge(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal))

    def forward_after(
        self, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor, past_valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Causal attention for tokens x [B, L, C] that follow P cached tokens.

        past_k, past_v: [1 or B, heads, P, head_dim]; past_valid: [B, P] marks the real
        cached tokens of each row (None: all). Returns the output and x's own keys and
        values (to extend the cache)."""
        q, k, v = self._project(x)
        batch, length, prefix = x.shape[0], x.shape[1], past_k.shape[2]
        keys = torch.cat([past_k.expand(batch, -1, -1, -1), k], dim=2)
        values = torch.cat([past_v.expand(batch, -1, -1, -1), v], dim=2)
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        if past_valid is None:
            allowed = torch.cat([causal.new_ones(length, prefix), causal], dim=1)
        else:
            allowed = torch.cat([past_valid[:, None, :].expand(-1, length, -1), causal.expand(batch, -1, -1)], dim=2)
            allowed = allowed[:, None]  # [B, 1, L, P + L]
        return self._merge(F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed)), k, v


class ResidualAttentionBlock(nn.Module):
    """CLIP's pre-norm transformer block (QuickGELU MLP for OpenAI weights, GELU for LAION's)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, quick_gelu: bool = True) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.attn = PackedMultiheadAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [("c_fc", nn.Linear(width, hidden)), ("gelu", QuickGELU() if quick_gelu else nn.GELU()), ("c_proj", nn.Linear(hidden, width))]
            )
        )

    def forward(self, x: torch.Tensor, causal: bool = False, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal=causal, attn_mask=attn_mask)
        return x + self.mlp(self.ln_2(x))

    def forward_after(
        self, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor, past_valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Causal block for tokens following a cached prefix (see PackedMultiheadAttention)."""
        attn, k, v = self.attn.forward_after(self.ln_1(x), past_k, past_v, past_valid)
        x = x + attn
        return x + self.mlp(self.ln_2(x)), k, v


class MLP(nn.Module):
    """Linear layers with ReLU between them (DETR's prediction MLP); `layer` builds each
    (SAN's pixel branches: 1x1 convolutions over a feature map)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, layer=nn.Linear) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(layer(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def interpolate_grid_embedding(grid_embedding: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize a square [S*S, C] positional embedding to [height*width, C] bilinearly.

    CLIP's positional embeddings are learnt for 224px inputs; dense prediction at other
    sizes resamples them (align_corners=False, as the published model does).
    """
    size = math.isqrt(int(grid_embedding.shape[0]))  # a parameter's shape: constant under export
    channels = int(grid_embedding.shape[1])
    grid = grid_embedding.reshape(1, size, size, channels).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(height * width, channels)


def any_true(mask: torch.Tensor, dim: int, keepdim: bool = False) -> torch.Tensor:
    """`mask.any(dim)` as a float max: exported, `any` becomes an integer ReduceSum, which
    TensorRT 8.6 does not import (its reductions take FP32/FP16 only)."""
    return mask.to(torch.float32).amax(dim, keepdim=keepdim) > 0


def all_true(mask: torch.Tensor, dim: int, keepdim: bool = False) -> torch.Tensor:
    return ~any_true(~mask, dim, keepdim)


def mask_pool(features: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Average of `features` [B, C, H, W] inside each mask (logit > 0) -> [B, Q, C]."""
    if features.shape[-2:] != mask_logits.shape[-2:]:
        mask_logits = F.interpolate(mask_logits, size=features.shape[-2:], mode="bilinear", align_corners=False)
    inside = (mask_logits > 0).to(features.dtype)
    inside = inside / (inside.sum(dim=(-1, -2), keepdim=True) + 1e-8)
    # einsum (not an explicit matmul) keeps the published summation order: masks are
    # thresholded at 0 downstream, so even rounding differences can flip a pixel.
    return torch.einsum("bchw,bqhw->bqc", features, inside)


def adaptive_max_pool2d(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """F.adaptive_max_pool2d as gathers and maxima, which ONNX and TensorRT take for any
    ratio of sizes (ONNX has no adaptive pooling; the exporter handles only sizes that
    divide). Output cell i covers input rows floor(i*H/h) to ceil((i+1)*H/h) - 1, as
    PyTorch's; a shorter window repeats its last row, which leaves its maximum alone."""
    for axis, out in ((-2, size[0]), (-1, size[1])):
        length = x.shape[axis]
        if length == out:
            continue
        index = torch.tensor(_pool_windows(int(length), int(out)), device=x.device)  # shapes only: a constant under export
        shape = list(x.shape)
        shape[axis] = out
        shape.insert(len(shape) + axis + 1, index.shape[1])
        x = x.index_select(axis, index.flatten()).view(shape).amax(axis)
    return x


@functools.cache
def _pool_windows(length: int, out: int) -> list[list[int]]:
    """Per output cell the input indices of its adaptive-pooling window, padded to one width."""
    start = [(i * length) // out for i in range(out)]
    end = [-(-(i + 1) * length // out) for i in range(out)]
    width = max(e - s for s, e in zip(start, end))
    return [[min(s + k, e - 1) for k in range(width)] for s, e in zip(start, end)]
