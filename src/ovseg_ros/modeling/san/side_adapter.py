"""SAN's side adapter: a small ViT beside the frozen CLIP that reads the image at full
resolution, takes in CLIP's features at a few depths, and proposes masks together with
the attention biases that make CLIP's last blocks recognise each of them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ovseg_ros.modeling.clip_vit import resize_positions
from ovseg_ros.modeling.common import MLP, LayerNorm2d


class PatchEmbedding(nn.Module):
    def __init__(self, width: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(images)
        return x.flatten(2).transpose(1, 2), (x.shape[-2], x.shape[-1])


class Attention(nn.Module):
    """timm's ViT attention: one packed qkv projection."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))


class FeedForward(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """timm's pre-norm ViT block (LayerNorm eps 1e-6, exact GELU)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = FeedForward(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SideViT(nn.Module):
    """The adapter's ViT (timm's layout, without class token and final norm)."""

    def __init__(self, width: int, depth: int, heads: int, patch_size: int, image_size: int) -> None:
        super().__init__()
        self.grid = image_size // patch_size
        self.patch_embed = PatchEmbedding(width, patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid, width))
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))


def conv1x1(input_dim: int, output_dim: int) -> nn.Conv2d:
    return nn.Conv2d(input_dim, output_dim, 1)


class FusionLayer(nn.Module):
    """CLIP's tokens at one depth, normalised and projected, resized onto the adapter's
    grid and added to its spatial tokens."""

    def __init__(self, clip_width: int, width: int) -> None:
        super().__init__()
        self.input_proj = nn.Sequential(LayerNorm2d(clip_width), nn.Conv2d(clip_width, width, 1))

    def forward(self, spatial: torch.Tensor, clip_map: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """spatial [B, h*w, C]; clip_map [B, C_clip, h', w']."""
        added = F.interpolate(self.input_proj(clip_map), size=grid, mode="bilinear", align_corners=False)
        return spatial + added.flatten(2).transpose(1, 2)


class MaskDecoder(nn.Module):
    """Queries and pixels through MLPs: mask logits, and one attention bias per CLIP head."""

    def __init__(self, width: int, clip_heads: int, embed: int = 256, hidden: int = 256, num_layers: int = 3) -> None:
        super().__init__()
        self.clip_heads = clip_heads
        self.query_mlp = MLP(width, hidden, embed, num_layers)
        self.pix_mlp = MLP(width, hidden, embed, num_layers, conv1x1)  # over the feature map
        self.attn_mlp = MLP(width, hidden, embed * clip_heads, num_layers, conv1x1)
        self.bias_scaling = nn.Linear(1, 1)

    def forward(self, queries: torch.Tensor, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """queries [B, Q, C], pixels [B, C, h, w] -> (mask logits [B, Q, h, w],
        attention biases [B, heads, Q, h, w])."""
        queries = self.query_mlp(queries)
        pix = self.pix_mlp(pixels)
        batch, channels, height, width = pix.shape
        masks = torch.einsum("bqc,bchw->bqhw", queries, pix)
        attn = self.attn_mlp(pixels).view(batch, self.clip_heads, channels, height, width)
        bias = torch.einsum("bqc,bnchw->bnqhw", queries, attn)
        return masks, bias * self.bias_scaling.weight[0, 0] + self.bias_scaling.bias[0]


class SideAdapter(nn.Module):
    """Queries and patch tokens through the adapter's blocks; CLIP layer `fused[j]` is
    added after block j (j = 0: after the embedding); positions are added again after
    every block but the last."""

    def __init__(self, clip_width: int, clip_heads: int, fused_layers: tuple[int, ...], width: int = 240, depth: int = 8,
                 heads: int = 6, patch_size: int = 16, image_size: int = 640, num_queries: int = 100) -> None:
        super().__init__()
        self.fused_layers = fused_layers
        self.vit_model = SideViT(width, depth, heads, patch_size, image_size)
        self.query_embed = nn.Parameter(torch.zeros(1, num_queries, width))
        self.query_pos_embed = nn.Parameter(torch.zeros(1, num_queries, width))
        self.fusion_layers = nn.ModuleDict({f"layer_{j}": FusionLayer(clip_width, width) for j in range(len(fused_layers))})
        self.mask_decoder = MaskDecoder(width, clip_heads)

    def forward(self, images: torch.Tensor, clip_maps: list[torch.Tensor],
                features: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """images: the padded normalised batch; clip_maps[j]: CLIP layer fused_layers[j]
        as [B, C, h', w']. Returns (mask logits [B, Q, h, w], biases [B, heads, Q, h, w])."""
        vit = self.vit_model
        x, grid = vit.patch_embed(images)
        batch, count = x.shape[0], x.shape[1]
        positions = resize_positions(vit.pos_embed[0], vit.grid, *grid)[None]
        positions = torch.cat([self.query_pos_embed, positions], dim=1)
        x = torch.cat([self.query_embed.expand(batch, -1, -1), x], dim=1) + positions
        x = self._fuse(0, x, clip_maps, grid, count, features)
        for index, block in enumerate(vit.blocks, start=1):
            x = block(x)
            if features is not None:
                features[f"side_block{index}"] = x
            x = self._fuse(index, x, clip_maps, grid, count, features)
            if index < len(vit.blocks):
                x = x + positions
        queries = x[:, :-count]
        pixels = x[:, -count:].transpose(1, 2).reshape(batch, -1, *grid)
        if features is not None:
            features.update(side_query=queries, side_x=pixels)
        return self.mask_decoder(queries, pixels)

    def _fuse(self, index, x, clip_maps, grid, count, features):
        if index >= len(self.fused_layers):
            return x
        spatial = self.fusion_layers[f"layer_{index}"](x[:, -count:], clip_maps[index], grid)
        if features is not None:
            features[f"side_fusion{index}"] = spatial
        return torch.cat([x[:, :-count], spatial], dim=1)
