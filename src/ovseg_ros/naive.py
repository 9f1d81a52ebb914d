"""Straightforward forms of the published computations: oracles for the tests and
baselines for the benchmarks. Never used on the inference path."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ovseg_ros.modeling.common import interpolate_grid_embedding


def loop_panoptic(mask_cls, mask_pred, thing, object_mask_threshold=0.0, overlap_threshold=0.8):
    """The published panoptic inference: one Python iteration (and several host syncs) per query."""
    scores, labels = mask_cls.softmax(-1).max(-1)
    masks = mask_pred.sigmoid()
    num_classes = mask_cls.shape[-1] - 1
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], masks[keep]
    panoptic = torch.zeros(masks.shape[-2:], dtype=torch.int32, device=masks.device)
    segments = []
    if cur_masks.shape[0] == 0:
        return panoptic, segments
    ids = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
    current, stuff_memory = 0, {}
    for k in range(cur_classes.shape[0]):
        cls = cur_classes[k].item()
        isthing = bool(thing[cls])
        area = (ids == k).sum().item()
        original = (cur_masks[k] >= 0.5).sum().item()
        mask = (ids == k) & (cur_masks[k] >= 0.5)
        if area > 0 and original > 0 and mask.sum().item() > 0:
            if area / original < overlap_threshold:
                continue
            if not isthing:
                if cls in stuff_memory:
                    panoptic[mask] = stuff_memory[cls]
                    continue
                stuff_memory[cls] = current + 1
            current += 1
            panoptic[mask] = current
            segments.append({"id": current, "isthing": isthing, "category_id": cls})
    return panoptic, segments


def loop_dynamic_conv_forward(module, query: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """DynamicChannelConv the published way: one grouped conv1d per image."""
    batch, num, _ = query.shape
    taps = module.weight_linear(query).view(batch, num, 1, module.kernel_size)
    out = torch.cat([F.conv1d(value[i : i + 1], taps[i], groups=num, padding="same") for i in range(batch)])
    return module.norm(out)


def repeated_query_attnpool_forward(module, features: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """MaskedAttentionPool the published way: the pooling query repeated once per mask
    and full multi-head attention with a boolean mask (empty masks give NaN or
    garbage depending on the torch version)."""
    batch, channels, height, width = features.shape
    num_masks = mask_logits.shape[1]
    tokens = features.reshape(batch, channels, height * width).permute(2, 0, 1)  # (HW)BC
    key_value = tokens + interpolate_grid_embedding(module.positional_embedding[1:], height, width)[:, None]
    query = tokens.mean(0, keepdim=True) + module.positional_embedding[:1, None, :]
    query = query.repeat_interleave(num_masks, dim=0)
    blocked = (mask_logits.reshape(batch, num_masks, -1) <= 0)
    blocked = blocked.unsqueeze(1).expand(-1, module.num_heads, -1, -1).reshape(batch * module.num_heads, num_masks, -1)
    out = F.multi_head_attention_forward(
        query=query, key=key_value, value=key_value, embed_dim_to_check=channels, num_heads=module.num_heads,
        q_proj_weight=module.q_proj.weight, k_proj_weight=module.k_proj.weight, v_proj_weight=module.v_proj.weight,
        in_proj_weight=None, in_proj_bias=torch.cat([module.q_proj.bias, module.k_proj.bias, module.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=module.c_proj.weight, out_proj_bias=module.c_proj.bias,
        use_separate_proj_weight=True, training=False, need_weights=False, attn_mask=blocked,
    )[0]
    return out.permute(1, 0, 2)


def loop_segment_boxes(panoptic, depth, intrinsics, num_segments: int, erosion: int = 2, percent: float = 0.1):
    """3D boxes the way a node usually gets them: per segment, its eroded mask's valid
    depth, back-projected, and per-axis percentiles (no grow-back of the edge)."""
    import cv2
    import numpy as np

    center = np.full((num_segments, 3), np.nan, np.float32)
    size = np.full((num_segments, 3), np.nan, np.float32)
    kernel = np.ones((2 * erosion + 1, 2 * erosion + 1), np.uint8)
    finite = np.isfinite(depth)
    for segment in range(1, num_segments + 1):
        mask = cv2.erode((panoptic == segment).astype(np.uint8), kernel).astype(bool) & finite
        vs, us = np.nonzero(mask)
        if vs.size == 0:
            continue
        z = depth[vs, us]
        xyz = np.stack([(us - intrinsics.cx) * z / intrinsics.fx, (vs - intrinsics.cy) * z / intrinsics.fy, z], axis=1)
        low, high = np.percentile(xyz, [percent, 100 - percent], axis=0)
        center[segment - 1], size[segment - 1] = (low + high) / 2, high - low
    return center, size
