"""Vectorised post-processing against the published loop (ovseg_ros.naive), on many
random inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg_ros.naive import loop_panoptic
from ovseg_ros.postprocess import class_logits, ensemble_logits, panoptic_fusion, segment_stats


def random_case(seed: int):
    g = torch.Generator().manual_seed(seed)
    q = int(torch.randint(1, 30, (1,), generator=g))
    k = int(torch.randint(1, 8, (1,), generator=g))
    h, w = (int(v) for v in torch.randint(4, 40, (2,), generator=g))
    mask_cls = torch.randn(q, k + 1, generator=g) * 3
    # coarse blobs so that queries overlap and stuff classes repeat
    coarse = torch.randn(q, 1, max(1, h // 4), max(1, w // 4), generator=g) * 4
    mask_pred = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    thing = torch.rand(k, generator=g) < 0.5
    thr = float(torch.rand(1, generator=g)) * 0.5
    overlap = float(torch.rand(1, generator=g)) * 0.9 + 0.05
    return mask_cls, mask_pred, thing, thr, overlap


@pytest.mark.parametrize("seed", range(300))
def test_fusion_equals_loop(seed):
    mask_cls, mask_pred, thing, thr, overlap = random_case(seed)
    expected_map, expected_segments = loop_panoptic(mask_cls, mask_pred, thing, thr, overlap)
    fused = panoptic_fusion(mask_cls, mask_pred, thing, thr, overlap)
    np.testing.assert_array_equal(fused.panoptic.numpy(), expected_map.numpy())
    shared = panoptic_fusion(mask_cls, mask_pred, thing, thr, overlap, mask_probs=mask_pred.sigmoid())
    np.testing.assert_array_equal(shared.panoptic.numpy(), expected_map.numpy())
    got = [
        {"id": i + 1, "isthing": bool(t), "category_id": int(c)}
        for i, (t, c) in enumerate(zip(fused.is_thing.tolist(), fused.category.tolist()))
    ]
    assert got == expected_segments


def test_fusion_all_void_gives_empty_result():
    mask_cls = torch.tensor([[0.0, 10.0], [0.0, 12.0]])  # void wins everywhere
    fused = panoptic_fusion(mask_cls, torch.randn(2, 5, 6), torch.tensor([True]))
    assert fused.panoptic.abs().sum() == 0 and fused.query.numel() == 0


def test_segment_stats_match_numpy():
    rng = np.random.default_rng(0)
    panoptic = rng.integers(0, 6, size=(37, 53)).astype(np.int32)
    panoptic[panoptic == 4] = 0  # an id with no pixels
    stats = segment_stats(torch.from_numpy(panoptic), 5)
    for seg in range(1, 6):
        ys, xs = np.nonzero(panoptic == seg)
        assert stats.area[seg - 1] == len(xs)
        if len(xs):
            assert stats.box[seg - 1].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]
            np.testing.assert_allclose(stats.centroid[seg - 1].numpy(), [xs.mean(), ys.mean()], rtol=1e-5)


def test_class_logits_take_best_synonym_and_keep_void_last():
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)  # 4 rows + void
    class_index = torch.tensor([0, 1, 1, 2])
    emb = torch.randn(2, 3, 8)
    logits = class_logits(emb, text, torch.tensor(0.0), class_index, 3)
    cos = torch.nn.functional.normalize(emb, dim=-1) @ text.t()
    expected = torch.stack([cos[..., 0], cos[..., 1:3].max(-1).values, cos[..., 3], cos[..., 4]], dim=-1)
    torch.testing.assert_close(logits, expected)


def test_ensemble_is_finite_when_probabilities_underflow():
    in_vocab = torch.tensor([[[200.0, -200.0, 0.0]]])
    out_vocab = torch.tensor([[[-200.0, 200.0, 0.0]]])
    result = ensemble_logits(in_vocab, out_vocab, torch.tensor([[True]]), torch.tensor([True, False]), 0.4, 0.8)
    assert torch.isfinite(result).all()


def test_ensemble_ignores_clip_for_invalid_masks():
    torch.manual_seed(1)
    in_vocab, out_vocab = torch.randn(1, 4, 6), torch.randn(1, 4, 6)
    seen = torch.tensor([True, False, True, False, True])
    invalid = ensemble_logits(in_vocab, out_vocab, torch.zeros(1, 4, dtype=torch.bool), seen, 0.4, 0.8)
    other = ensemble_logits(in_vocab, torch.randn(1, 4, 6), torch.zeros(1, 4, dtype=torch.bool), seen, 0.4, 0.8)
    torch.testing.assert_close(invalid, other)
