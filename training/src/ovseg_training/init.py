"""EOV-Seg's initialisation of the parts that learn, as the published code leaves them
(nhw649/EOV-Seg @ 6f5e93e9), for training from the CLIP towers rather than from a
checkpoint:

- neck (its LiteAggregator): xavier-uniform on every parameter of more than one
  dimension, after the layers' own initialisation, so it overrides the deformable
  convs' zero offset weights and the bilinear transposed convs (neck/neck.py,
  `_reset_parameters`); the offset convs' biases stay 0, other biases PyTorch's;
- decoder stages: truncated normal (std 0.02) on every nn.Linear, biases 0, LayerNorms
  1 / 0 (head.py, `CrossAttenHead.apply(_init_weights)`); attention's packed input
  projection keeps PyTorch's xavier;
- Vocabulary-Aware Selection: MSRA fill (kaiming normal, fan out) on its depthwise and
  pointwise convs (detectron2's DepthwiseSeparableConv2d); its linear PyTorch's;
- the void embedding N(0, 1), as an nn.Embedding is born (the query kernels are one).
"""

from __future__ import annotations

import torch
from torch import nn


def initialize_like_published(model: nn.Module) -> None:
    with torch.no_grad():
        for parameter in model.neck.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)
        for stage in model.decoder.mask_heads:
            stage.apply(_decoder_init)
        vas = model.decoder.vas.embed_conv
        for conv in (vas.depthwise, vas.pointwise):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(model.void_embedding, 0.0, 1.0)
        nn.init.normal_(model.decoder.object_kernels.weight, 0.0, 1.0)


def _decoder_init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
