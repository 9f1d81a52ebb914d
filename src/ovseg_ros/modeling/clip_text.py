"""CLIP's text transformer, which turns prompts into the classifier's class embeddings."""

from __future__ import annotations

import torch
from torch import nn

from ovseg_ros.modeling.common import ResidualAttentionBlock


class TextTransformer(nn.Module):
    """Holds the blocks under the name `resblocks`, as CLIP checkpoints do."""

    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, causal=True)
        return x


class CLIPTextEncoder(nn.Module):
    """Token ids -> projected end-of-text features (not normalised).

    Attention is causal, so the end-of-text feature never sees the padding after it:
    prompts may be cut to the longest prompt of a batch instead of the full context
    without changing the result (up to float rounding).
    """

    def __init__(
        self,
        vocab_size: int = 49408,
        context_length: int = 77,
        width: int = 512,
        layers: int = 12,
        heads: int = 8,
        output_dim: int = 1024,
    ) -> None:
        super().__init__()
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width).normal_(std=0.01))
        self.transformer = TextTransformer(width, layers, heads)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, output_dim).normal_(std=width**-0.5))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: [N, L] int64, L <= context_length, end-of-text has the largest id."""
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        x = self.ln_final(self.transformer(x))
        eot = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        return eot @ self.text_projection
