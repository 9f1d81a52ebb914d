"""FC-CLIP's transformer decoder (Mask2Former's, 9 layers, 250 queries): each layer lets
the queries cross-attend to one pixel-decoder level, only where their previous masks
are, then self-attend; after the learnt queries and after every layer, prediction heads
give masks and class embeddings (mask-pooled pixel features + the query, compared with
text outside)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ovseg_ros.modeling.common import MLP, all_true, mask_pool
from ovseg_ros.modeling.fc_clip.position_encoding import sine_position_encoding


class SelfAttentionLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads)  # sequence first, as published
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        q = k = x + query_pos
        return self.norm(x + self.self_attn(q, k, value=x, need_weights=False)[0])


class CrossAttentionLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(dim, heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        out = self.multihead_attn(query=x + query_pos, key=memory + pos, value=memory, attn_mask=mask, need_weights=False)[0]
        return self.norm(x + out)


class FFNLayer(nn.Module):
    def __init__(self, dim: int, ffn_dim: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.linear2(F.relu(self.linear1(x))))


class MaskedAttentionDecoder(nn.Module):
    def __init__(
        self, num_queries: int = 250, dim: int = 256, heads: int = 8, ffn_dim: int = 2048, layers: int = 9,
        mask_dim: int = 256, text_dim: int = 768, levels: int = 3,
    ) -> None:
        super().__init__()
        self.heads, self.levels = heads, levels
        self.transformer_self_attention_layers = nn.ModuleList(SelfAttentionLayer(dim, heads) for _ in range(layers))
        self.transformer_cross_attention_layers = nn.ModuleList(CrossAttentionLayer(dim, heads) for _ in range(layers))
        self.transformer_ffn_layers = nn.ModuleList(FFNLayer(dim, ffn_dim) for _ in range(layers))
        self.decoder_norm = nn.LayerNorm(dim)
        self.query_feat = nn.Embedding(num_queries, dim)
        self.query_embed = nn.Embedding(num_queries, dim)
        self.level_embed = nn.Embedding(levels, dim)
        self.mask_embed = MLP(dim, dim, mask_dim, 3)
        self._mask_pooling_proj = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
        self.class_embed = MLP(dim, dim, text_dim, 3)
        self.logit_scale = nn.Parameter(torch.tensor(2.6592600369644165))  # log(1 / 0.07)

    def forward(self, levels: list[torch.Tensor], mask_features: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """levels: pixel-decoder maps at strides 32, 16, 8 [B, C, H_l, W_l]; mask_features
        [B, C, H/4, W/4] -> per prediction (learnt queries, then each layer): class
        embeddings [B, Q, D] and mask logits [B, Q, H/4, W/4]."""
        memory = self.memory(levels)
        output = self.query_feat.weight.unsqueeze(1).expand(-1, mask_features.shape[0], -1)
        embeddings, masks, attn_logits = self.predict(output, mask_features, memory.sizes[0])
        all_embeddings, all_masks = [embeddings], [masks]
        for i in range(len(self.transformer_ffn_layers)):
            output = self.layer(i, output, self.attention_mask(attn_logits), memory)
            embeddings, masks, attn_logits = self.predict(output, mask_features, memory.sizes[(i + 1) % self.levels])
            all_embeddings.append(embeddings)
            all_masks.append(masks)
        return all_embeddings, all_masks

    def memory(self, levels: list[torch.Tensor]) -> DecoderMemory:
        """What the queries cross-attend to, per level: pixels [HW, B, C] with their level
        embedding, and their sine positions."""
        batch = levels[0].shape[0]
        sizes = [tuple(x.shape[-2:]) for x in levels]
        memories, positions = [], []
        for i, x in enumerate(levels):
            height, width = sizes[i]
            pos = sine_position_encoding(batch, height, width, x.shape[1] // 2, x.device, x.dtype)
            positions.append(pos.flatten(2).permute(2, 0, 1))  # [HW, B, C]
            memories.append((x.flatten(2) + self.level_embed.weight[i][None, :, None]).permute(2, 0, 1))
        return DecoderMemory(memories, positions, sizes)

    def layer(self, i: int, output: torch.Tensor, attn_mask: torch.Tensor, memory: DecoderMemory) -> torch.Tensor:
        """Layer i on the queries [Q, B, C]: cross-attention to level i % 3 where the
        attention mask allows, self-attention, FFN. Apart from `forward` so that a parity
        check can re-run the layers after one attention-mask entry is flipped."""
        level = i % self.levels
        query_pos = self.query_embed.weight.unsqueeze(1).expand(-1, output.shape[1], -1)
        attn_mask = attn_mask & ~all_true(attn_mask, -1, keepdim=True)  # a query with no pixel attends everywhere
        output = self.transformer_cross_attention_layers[i](output, memory.memories[level], attn_mask, memory.positions[level], query_pos)
        return self.transformer_ffn_layers[i](self.transformer_self_attention_layers[i](output, query_pos))

    def predict(self, output: torch.Tensor, mask_features: torch.Tensor, attn_size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Heads on the current queries [Q, B, C]: class embeddings, mask logits, and the
        mask logits resized to the next layer's level [B, Q, h, w] (its attention mask)."""
        decoded = self.decoder_norm(output).transpose(0, 1)  # [B, Q, C]
        mask_logits = torch.einsum("bqc,bchw->bqhw", self.mask_embed(decoded), mask_features)
        pooled = self._mask_pooling_proj(mask_pool(mask_features, mask_logits))
        embeddings = self.class_embed(pooled + decoded)
        attn_logits = F.interpolate(mask_logits, size=attn_size, mode="bilinear", align_corners=False)
        return embeddings, mask_logits, attn_logits

    def attention_mask(self, attn_logits: torch.Tensor) -> torch.Tensor:
        """[B, Q, h, w] logits -> [B*heads, Q, h*w], True where a query may not attend."""
        blocked = attn_logits.sigmoid().flatten(2) < 0.5  # as published: sigmoid, not the logit's sign (equal but at rounding)
        return blocked.unsqueeze(1).expand(-1, self.heads, -1, -1).flatten(0, 1)


@dataclass
class DecoderMemory:
    memories: list[torch.Tensor]  # per level [HW, B, C]
    positions: list[torch.Tensor]  # per level [HW, B, C]
    sizes: list[tuple[int, int]]  # per level (h, w)
