"""SED's hierarchical decoder: cost-volume embedding, three `Up` blocks (ConvNeXt block,
class attention, upsampling, guidance, double conv) and the four stage heads.

Tensors are [B * K, C, H, W], image-major: the class axis is a batch axis for every
layer except the class attention, which attends across the K classes of each image at
each pixel. Module names are the official ones below `sem_seg_head.predictor.transformer`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ovseg_ros.modeling.sed.config import SEDConfig


class ConvNeXtBlock(nn.Module):
    """SED's ConvNeXt block: depthwise conv, LayerNorm, MLP x4 (exact GELU), layer scale, residual."""

    def __init__(self, dim: int, kernel_size: int = 9) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class LinearClassAttention(nn.Module):
    """Multi-head linear attention ("Transformers are RNNs": feature map elu + 1) over the
    classes of one pixel. Linear in the number of classes, which can be hundreds."""

    def __init__(self, dim: int, heads: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.heads = heads
        self.eps = eps
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """x: [N, T, C] (N pixels, T classes) -> [N, T, C].

        valid [N, T] (bool) leaves classes out as keys and values (zero contribution):
        the same as attending over the valid classes alone, up to rounding.
        """
        n, t, c = x.shape
        q = F.elu(self.q(x).view(n, t, self.heads, -1).transpose(1, 2)) + 1  # [N, h, T, d]
        k = F.elu(self.k(x).view(n, t, self.heads, -1).transpose(1, 2)) + 1
        v = self.v(x).view(n, t, self.heads, -1).transpose(1, 2)
        if valid is None:
            count = torch.tensor(float(t), dtype=x.dtype, device=x.device)
        else:
            weight = valid.to(x.dtype)[:, None, :, None]  # [N, 1, T, 1]
            k, v = k * weight, v * weight
            count = valid.to(x.dtype).sum(-1).clamp(min=1)[:, None, None, None]
        v = v / count  # the published scaling (against fp16 overflow), undone below
        kv = k.transpose(-2, -1) @ v  # [N, h, d, d]
        normaliser = 1.0 / ((q @ k.sum(dim=2, keepdim=True).transpose(-2, -1)) + self.eps)  # [N, h, T, 1]
        out = (q @ kv) * normaliser * count
        return out.transpose(1, 2).reshape(n, t, c)


class ClassAttention(nn.Module):
    """Pre-norm attention + MLP across the classes at every (average-pooled) pixel,
    resized back and added to the input. Registered as `attention` in each Up block."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attention = LinearClassAttention(dim, heads)
        self.MLP = nn.Sequential(nn.Linear(dim, dim * 4), nn.ReLU(), nn.Linear(dim * 4, dim))  # official name
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(
        self, x: torch.Tensor, num_images: int, pooling_size: tuple[int, int] = (1, 1), valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: [B * K, C, H, W]; valid: [B, K] bool (None: every class takes part)."""
        pooled = F.avg_pool2d(x, pooling_size) if tuple(pooling_size) != (1, 1) else x
        _, channels, height, width = pooled.shape
        classes = pooled.shape[0] // num_images
        tokens = pooled.view(num_images, classes, channels, height, width).permute(0, 3, 4, 1, 2)
        tokens = tokens.reshape(num_images * height * width, classes, channels)
        valid_tokens = None
        if valid is not None:
            valid_tokens = valid[:, None, :].expand(num_images, height * width, classes).reshape(-1, classes)
        tokens = tokens + self.attention(self.norm1(tokens), valid_tokens)
        tokens = tokens + self.MLP(self.norm2(tokens))
        out = tokens.view(num_images, height, width, classes, channels).permute(0, 3, 4, 1, 2)
        out = out.reshape(num_images * classes, channels, height, width)
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=True)
        # `out` already holds the (pooled) input as its residual: the input is counted twice, as published
        return x + out


class DoubleConv(nn.Module):
    """(3x3 conv without bias, GroupNorm of 16-channel groups, ReLU) x 2."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.GroupNorm(out_channels // 16, out_channels),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.GroupNorm(out_channels // 16, out_channels),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class Up(nn.Module):
    """One decoder level: refine per class (ConvNeXt block), exchange across classes
    (class attention), upsample x2, concatenate the image's appearance guidance and the
    class's cost-volume guidance, and fuse (double conv)."""

    def __init__(self, in_channels: int, out_channels: int, guidance_channels: int, heads: int, kernel_size: int) -> None:
        super().__init__()
        self.cnext = ConvNeXtBlock(in_channels, kernel_size)
        self.attention = ClassAttention(in_channels, heads)
        self.up = nn.ConvTranspose2d(in_channels, in_channels - guidance_channels, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels + guidance_channels, out_channels)

    def forward(
        self,
        x: torch.Tensor,
        guidance: torch.Tensor,
        corr_guidance: torch.Tensor,
        pooling_size: tuple[int, int] = (1, 1),
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B * K, C, H, W], guidance [B, g, 2H, 2W] (shared by the classes of an image),
        corr_guidance [B * K, g, 2H, 2W] -> [B * K, out, 2H, 2W]."""
        num_images = guidance.shape[0]
        x = self.attention(self.cnext(x), num_images, pooling_size, valid)
        x = self.up(x)
        classes = x.shape[0] // num_images
        shared = guidance[:, None].expand(-1, classes, -1, -1, -1).reshape(num_images * classes, *guidance.shape[1:])
        return self.conv(torch.cat([x, shared, corr_guidance], dim=1))


class SEDDecoder(nn.Module):
    """The layers of the official `Aggregator`, under its names; the stage loop (with or
    without early rejection) lives in the network (`SED.decode`)."""

    def __init__(self, config: SEDConfig, appearance_channels: tuple[int, int, int]) -> None:
        """appearance_channels: the widths of res4, res3, res2 (guidance at 48, 96, 192)."""
        super().__init__()
        hidden, dims, guidance = config.hidden_dim, config.decoder_dims, config.guidance_dims
        self.conv1 = nn.Conv2d(config.num_templates, hidden, kernel_size=7, padding=3)
        self.decoder_guidance_projection = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, g, kernel_size=3, padding=1), nn.ReLU()) for c, g in zip(appearance_channels, guidance)
        )
        corr_in = (config.num_templates, *guidance[:-1])
        self.decoder_corr_guidance_projection = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(c, g, kernel_size=2, stride=2), nn.ReLU()) for c, g in zip(corr_in, guidance)
        )
        ins = (hidden, *dims[:-1])
        self.decoder1 = Up(ins[0], dims[0], guidance[0], config.num_heads, config.kernel_size)
        self.decoder2 = Up(ins[1], dims[1], guidance[1], config.num_heads, config.kernel_size)
        self.decoder3 = Up(ins[2], dims[2], guidance[2], config.num_heads, config.kernel_size)
        self.head0 = nn.Conv2d(hidden, 1, kernel_size=3, padding=1)
        self.head1 = nn.Conv2d(dims[0], 1, kernel_size=3, padding=1)
        self.head2 = nn.Conv2d(dims[1], 1, kernel_size=3, padding=1)
        self.head = nn.Conv2d(dims[2], 1, kernel_size=3, padding=1)

    @property
    def blocks(self) -> tuple[Up, Up, Up]:
        return self.decoder1, self.decoder2, self.decoder3

    @property
    def heads(self) -> tuple[nn.Conv2d, nn.Conv2d, nn.Conv2d, nn.Conv2d]:
        """Stage 0..3 heads (stage 3 is the output)."""
        return self.head0, self.head1, self.head2, self.head

    def embed_cost_volume(self, cost: torch.Tensor) -> torch.Tensor:
        """cost [B, K, T, H, W] -> [B * K, hidden, H, W]."""
        return self.conv1(cost.flatten(0, 1))

    def appearance_guidance(self, res4: torch.Tensor, res3: torch.Tensor, res2: torch.Tensor) -> list[torch.Tensor]:
        return [proj(x) for proj, x in zip(self.decoder_guidance_projection, (res4, res3, res2))]

    def cost_volume_guidance(self, cost: torch.Tensor) -> list[torch.Tensor]:
        """cost [B, K, T, H, W] -> per class, upsampled x2, x4, x8 (each from the previous)."""
        x = cost.flatten(0, 1)
        out = []
        for proj in self.decoder_corr_guidance_projection:
            x = proj(x)
            out.append(x)
        return out
