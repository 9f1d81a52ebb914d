"""The image tower of a LAION ConvNeXt CLIP (EOV-Seg L): timm's ConvNeXt as `trunk`
(open_clip's layout, so checkpoints load as they are) and CLIP's MLP projection `head`."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ovseg_ros.modeling.common import mask_pool


class ProjectionMLP(nn.Module):
    def __init__(self, width: int, output_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(width, output_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CLIPConvNeXt(nn.Module):
    def __init__(self, timm_name: str = "convnext_large", output_dim: int = 768) -> None:
        super().__init__()
        try:
            import timm
        except ImportError as exc:  # pragma: no cover - a dependency of open_clip_torch
            raise ImportError("EOV-Seg L needs timm: pip install timm") from exc
        self.trunk = timm.create_model(timm_name, pretrained=False, num_classes=0)
        width = self.trunk.num_features
        self.head = nn.Sequential(OrderedDict(mlp=ProjectionMLP(width, output_dim)))
        self.channels = [info["num_chs"] for info in self.trunk.feature_info]

    def embed_masks(self, res5: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
        """Mean of the final features inside each mask, through CLIP's pooling head and
        projection (what CLIP computes for a whole image, restricted to the mask)."""
        pooled = mask_pool(self.trunk.norm_pre(res5), mask_logits)  # [B, Q, C]
        batch, queries, channels = pooled.shape
        x = self.trunk.head(pooled.reshape(batch * queries, channels, 1, 1))
        return self.head(x).view(batch, queries, -1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: normalised images [B, 3, H, W] -> [res2, res3, res4, res5] (strides 4..32)."""
        x = self.trunk.stem(x)
        features = []
        for stage in self.trunk.stages:
            x = stage(x)
            features.append(x)
        return features
