"""CLIP's text transformer, which turns prompts into the classifier's class embeddings."""

from __future__ import annotations

import torch
from torch import nn

from ovseg_ros.modeling.common import ResidualAttentionBlock


class TextTransformer(nn.Module):
    """Holds the blocks under the name `resblocks`, as CLIP checkpoints do."""

    def __init__(self, width: int, layers: int, heads: int, quick_gelu: bool = True) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, quick_gelu=quick_gelu) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, causal=True)
        return x


class CLIPTextEncoder(nn.Module):
    """Token ids -> projected end-of-text features (not normalised).

    Attention is causal, so the end-of-text feature never sees the padding after it
    (prompts may be cut to their own length), and a prefix shared by many prompts can be
    encoded once (`prefix_cache` + `forward_after_prefix`), without changing the result
    beyond float rounding.
    """

    def __init__(
        self,
        vocab_size: int = 49408,
        context_length: int = 77,
        width: int = 512,
        layers: int = 12,
        heads: int = 8,
        output_dim: int = 1024,
        quick_gelu: bool = True,
    ) -> None:
        super().__init__()
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width).normal_(std=0.01))
        self.transformer = TextTransformer(width, layers, heads, quick_gelu)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, output_dim).normal_(std=width**-0.5))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: [N, L] int64, L <= context_length, end-of-text has the largest id."""
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        return self._project_eot(self.transformer(x), tokens)

    def prefix_cache(self, prefix: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys and values [T, heads, P, head_dim] of every layer for token prefixes [T, P]
        (or one, [P]) shared by many prompts; zero padded on the right when of different
        lengths (forward_after_prefix's `prefix_lengths` then masks the padding).

        Attention is causal, so these do not depend on what follows the prefix.
        """
        prefix = prefix if prefix.dim() == 2 else prefix[None]
        x = self.token_embedding(prefix) + self.positional_embedding[: prefix.shape[1]]
        cache = []
        for block in self.transformer.resblocks:
            empty = x.new_empty(1, block.attn.num_heads, 0, x.shape[-1] // block.attn.num_heads)
            x, k, v = block.forward_after(x, empty, empty)
            cache.append((k, v))
        return cache

    def forward_after_prefix(
        self,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
        suffix: torch.Tensor,
        prefix_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Same as forward(prefix + suffix) for a batch of suffixes [N, L] (each holding
        its end-of-text token), reusing cached prefix keys and values.

        cache: per layer (k, v) of shape [1 or N, heads, P, head_dim]. prefix_lengths [N]
        gives each row's real prefix length when rows have different, zero-padded
        prefixes (None: every row's prefix is all P tokens).
        """
        padded = cache[0][0].shape[2]
        steps = torch.arange(suffix.shape[1], device=suffix.device)
        if prefix_lengths is None:
            positions, valid = padded + steps, None
        else:
            positions = prefix_lengths[:, None] + steps
            valid = torch.arange(padded, device=suffix.device)[None, :] < prefix_lengths[:, None]
        x = self.token_embedding(suffix) + self.positional_embedding[positions]
        for block, (past_k, past_v) in zip(self.transformer.resblocks, cache):
            x, _, _ = block.forward_after(x, past_k, past_v, valid)
        return self._project_eot(x, suffix)

    def _project_eot(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        x = self.ln_final(x)
        eot = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        return eot @ self.text_projection
