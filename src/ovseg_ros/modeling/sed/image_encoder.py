"""SED's CLIP image tower: open_clip's timm ConvNeXt (`trunk`, `head`, so checkpoints load
under their own names) with CLIP's pooling head applied at every pixel of res5."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ovseg_ros.modeling.clip_convnext import ProjectionMLP


class DenseCLIPConvNeXt(nn.Module):
    """Image [B, 3, H, W] -> stem, res2..res5 (strides 4..32) and `clip_vis_dense`.

    `clip_vis_dense` is what CLIP computes for a whole image (trunk head norm, then the
    projection), evaluated for each res5 pixel on its own: an embedding per pixel in
    CLIP's joint space, which the cost volume compares with the text features.
    """

    def __init__(self, timm_name: str = "convnext_base", embed_dim: int = 640, projection: str = "linear") -> None:
        super().__init__()
        try:
            import timm
        except ImportError as exc:  # pragma: no cover - a dependency of open_clip_torch
            raise ImportError("SED needs timm: pip install timm") from exc
        self.trunk = timm.create_model(timm_name, pretrained=False, num_classes=0)
        width = self.trunk.num_features
        if projection == "linear":
            head = OrderedDict(proj=nn.Linear(width, embed_dim, bias=False))
        elif projection == "mlp":
            head = OrderedDict(mlp=ProjectionMLP(width, embed_dim))  # hidden width 2 * embed_dim = trunk width
        else:
            raise ValueError(f"projection must be 'linear' or 'mlp', got {projection!r}")
        self.head = nn.Sequential(head)
        self.channels = [info["num_chs"] for info in self.trunk.feature_info]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = {}
        x = self.trunk.stem(x)
        features["stem"] = x
        for i, stage in enumerate(self.trunk.stages):
            x = stage(x)
            features[f"res{i + 2}"] = x
        dense = self.trunk.head.norm(self.trunk.norm_pre(x))  # LayerNorm2d: per pixel, over channels
        features["clip_vis_dense"] = self.head(dense.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return features
