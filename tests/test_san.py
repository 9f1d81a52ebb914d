"""SAN beside the panoptic models: its pieces that the fixtures do not isolate (the
exportable adaptive pooling, the recognition mask), the semantic-only predictor (a
segment per class present, no things, whole class names), and its checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovseg_ros.checkpoint import CheckpointError, check_model, detect_model, official_state_dict
from ovseg_ros.config import InferenceConfig, model_config
from ovseg_ros.modeling import build_network
from ovseg_ros.modeling.common import adaptive_max_pool2d
from ovseg_ros.modeling.san.san import MASKED, recognition_mask
from ovseg_ros.postprocess import class_segments
from ovseg_ros.predictor import Predictor


@pytest.mark.parametrize("size,out", [((16, 22), (8, 11)), ((16, 22), (12, 17)), ((40, 54), (20, 27)), ((7, 9), (3, 4)), ((5, 6), (5, 6))])
def test_adaptive_max_pool_equals_torchs(size, out):
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    assert torch.equal(adaptive_max_pool2d(x, out), F.adaptive_max_pool2d(x, out))


def test_recognition_mask_lets_a_query_see_itself_and_the_image_only():
    bias = torch.randn(1, 2, 3, 4)  # 2 heads, 3 queries, 4 spatial tokens
    mask = recognition_mask(bias, 3)
    assert mask.shape == (1, 2, 8, 8)
    for q in range(3):
        row = mask[0, 1, q]
        assert row[q] == 0 and all(row[j] == MASKED for j in range(4) if j != q)  # other queries and the class token
        assert torch.equal(row[4:], bias[0, 1, q])
    assert (mask[0, :, 3:, :3] == MASKED).all() and (mask[0, :, 3:, 3:] == 0).all()  # class and spatial tokens


def test_class_segments_are_the_classes_present_in_class_order():
    semantic = torch.tensor([[2, 2, -1], [0, 2, 0]])
    probabilities = torch.zeros(4, 2, 3)
    probabilities[2] = 3.0  # SAN's scores are sums over queries: shares are reported
    probabilities[0] = 1.0
    result = class_segments(probabilities, semantic)
    assert result.category.tolist() == [0, 2] and not result.is_thing.any() and result.query.tolist() == [-1, -1]
    assert result.panoptic.tolist() == [[2, 2, 0], [1, 2, 1]]
    assert result.score.tolist() == pytest.approx([0.25, 0.75])


@pytest.fixture(scope="module")
def san_predictor():
    return Predictor.from_checkpoint(None, model="san", stand_in_weights=True, config=InferenceConfig(min_size=0))


def test_semantic_predictor_gives_a_segment_per_class_and_no_things(san_predictor):
    predictor = san_predictor
    predictor.set_vocabulary("person; car, automobile; road; sky", things="person; car")
    state = predictor._state
    assert state.text.shape[0] == 4 and state.class_index.tolist() == [0, 1, 2, 3]  # "car, automobile": one prompt
    assert not state.is_thing.any()
    image = (np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)
    result = predictor(image, return_probabilities=True)
    present = sorted(set(result.semantic.ravel().tolist()) - {-1})
    assert [s.category for s in result.segments] == present
    assert [s.id for s in result.segments] == list(range(1, len(present) + 1))
    assert all(not s.is_thing and 0 < s.score <= 1 for s in result.segments)
    for s in result.segments:  # the segment is exactly its class's pixels
        assert np.array_equal(result.panoptic == s.id, result.semantic == s.category)
        assert s.area == int((result.semantic == s.category).sum())
    assert result.embeddings is None and result.clip_embeddings is None
    assert result.probabilities.shape == (4, 64, 96)


def test_checkpoints_name_their_variant_and_refuse_another_model():
    for variant in ("B", "L"):
        network = build_network(model_config("san", variant))
        state_dict = official_state_dict(network)
        assert detect_model(state_dict) == ("san", variant)
        assert "clip_visual_extractor.conv1.weight" in state_dict and "ov_classifier.bg_embed" in state_dict
        with pytest.raises(CheckpointError, match="--model san --variant " + variant):
            check_model(state_dict, "eov_seg", None)
        del network, state_dict
    bad = {"clip_visual_extractor.conv1.weight": torch.zeros(512, 3, 32, 32), "side_adapter_network.query_embed": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="patch embedding"):
        detect_model(bad)


def test_the_tracker_keeps_one_id_per_class_region(san_predictor):
    from ovseg_ros.tracking import SegmentTracker

    san_predictor.set_vocabulary("person; road; sky")
    tracker = SegmentTracker()
    rng = np.random.default_rng(1)
    ids = []
    for t in range(3):
        image = (rng.random((64, 96, 3)) * 255).astype(np.uint8)
        result = san_predictor(image)
        ids.append(dict(zip((s.label for s in result.segments), tracker.update(result, stamp=0.1 * t))))
    assert all(i > 0 for frame in ids for i in frame.values())
    for label in set(ids[0]) & set(ids[-1]):
        assert ids[0][label] == ids[-1][label]
