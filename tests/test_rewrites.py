"""The rewritten network parts compute what the published forms compute."""

from __future__ import annotations

import torch

from ovseg_ros.modeling.clip_resnet import MaskedAttentionPool
from ovseg_ros.modeling.eov_seg.decoder import DynamicChannelConv
from ovseg_ros.naive import loop_dynamic_conv_forward, repeated_query_attnpool_forward


def test_batched_dynamic_conv_equals_per_image_loop():
    torch.manual_seed(0)
    module = DynamicChannelConv(32).eval()
    query, value = torch.randn(3, 10, 32), torch.randn(3, 10, 32)
    torch.testing.assert_close(module(query, value), loop_dynamic_conv_forward(module, query, value))


def test_masked_attention_pool_equals_repeated_query_attention():
    torch.manual_seed(0)
    pool = MaskedAttentionPool(grid_size=7, embed_dim=64, num_heads=4, output_dim=32).eval()
    features = torch.randn(2, 64, 5, 6)
    masks = torch.randn(2, 9, 5, 6)
    masks[:, 0] = -1.0  # an empty mask: ours stays finite (its CLIP vote is ignored later)
    ours = pool(features, masks)
    ref = repeated_query_attnpool_forward(pool, features, masks)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours[:, 1:], ref[:, 1:], rtol=1e-4, atol=1e-5)
