"""The predictor facade: weights policy, vocabulary swaps, any image size."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg_ros.config import InferenceConfig
from ovseg_ros.backends import TorchEngine
from ovseg_ros.predictor import MissingWeightsError, Predictor, build_model
from ovseg_ros.vocabulary import TextEmbedder, VocabularyError


def test_refuses_without_checkpoint():
    with pytest.raises(MissingWeightsError, match="--weights random"):
        build_model(None)


def test_stand_in_weights_say_so():
    import logging

    class Collect(logging.Handler):  # on the logger itself: launch_testing (same session) reconfigures the root
        messages: list[str] = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    logger = logging.getLogger("ovseg_ros.predictor")
    handler = Collect(level=logging.WARNING)
    logger.addHandler(handler)
    try:
        build_model(None, stand_in_weights=True)
    finally:
        logger.removeHandler(handler)
    assert any("STAND-IN RANDOM WEIGHTS" in m for m in handler.messages)


@pytest.fixture(scope="module")
def predictor(parity_model):
    config = InferenceConfig(min_size=96, max_size=160)  # small inputs keep the test fast
    return Predictor(TorchEngine(parity_model), TextEmbedder(parity_model.text_encoder), config)


def test_needs_a_vocabulary_first(parity_model):
    fresh = Predictor(TorchEngine(parity_model), TextEmbedder(parity_model.text_encoder))
    with pytest.raises(VocabularyError, match="set_vocabulary"):
        fresh(np.zeros((10, 10, 3), np.uint8))


def test_bad_vocabulary_keeps_the_old_one(predictor):
    version = predictor.set_vocabulary("person; forklift, fork lift truck; floor", "person; forklift")
    with pytest.raises(VocabularyError):
        predictor.set_vocabulary("person; person")
    assert predictor.vocabulary_version == version
    assert predictor.vocabulary.labels == ["person", "forklift", "floor"]


@pytest.mark.parametrize("shape", [(77, 131, 3), (120, 90), (64, 64, 4), (33, 200, 1)])
def test_any_image_size_and_consistent_segments(predictor, shape):
    predictor.set_vocabulary("person; forklift, fork lift truck; floor; wall", "person; forklift")
    image = np.random.default_rng(1).integers(0, 255, size=shape, dtype=np.uint8)
    result = predictor(image, return_probabilities=True)
    assert result.panoptic.shape == shape[:2] and result.panoptic.dtype == np.int32
    assert result.semantic.shape == shape[:2]
    assert result.probabilities.shape == (4, *shape[:2])
    assert result.vocabulary_version == predictor.vocabulary_version
    ids = set(np.unique(result.panoptic).tolist()) - {0}
    assert ids <= {s.id for s in result.segments}
    for s in result.segments:
        mask = result.panoptic == s.id
        assert s.area == int(mask.sum())
        if s.area:
            ys, xs = np.nonzero(mask)
            assert s.bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        assert s.label == predictor.vocabulary.labels[s.category]
        assert s.is_thing == predictor.vocabulary.is_thing[s.category]


def test_unusable_device_is_a_clear_error():
    import torch

    from ovseg_ros.backends import resolve_device

    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu7")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_stand_in_weights_are_reproducible():
    """Exported engines and the predictor must agree on stand-in weights (weights hash)."""
    import torch

    from ovseg_ros.onnx_export import weights_hash

    torch.manual_seed(1)
    first = build_model(None, stand_in_weights=True)
    torch.manual_seed(2)
    second = build_model(None, stand_in_weights=True)
    assert weights_hash(first) == weights_hash(second)


def test_rn50x4_variant_runs():
    """EOV-Seg M: no fixtures exist for it, but it builds and runs with its own widths."""
    import torch

    from ovseg_ros.config import variant_config
    from ovseg_ros.modeling import EOVSeg

    model = EOVSeg(variant_config("M")).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 64, 96), torch.nn.functional.normalize(torch.randn(3, 640), dim=-1))
    assert out.mask_logits[-1].shape == (1, 100, 16, 24) and out.class_embeddings[-1].shape == (1, 100, 640)
    assert out.clip_embeddings.shape == (1, 100, 640)


class RowLimitedEngine(TorchEngine):
    """The real network with the one extra a compiled engine has: a most text rows its
    optimisation profile accepts (TensorRTEngine.check_text_rows)."""

    def __init__(self, model, high: int) -> None:
        super().__init__(model)
        self.text_rows = (1, high, high)

    def check_text_rows(self, rows: int) -> None:
        from ovseg_ros.backends.tensorrt_plan import check_text_rows

        check_text_rows(rows, self.text_rows)


def test_vocabulary_beyond_the_engines_profile_is_refused_when_set(tiny_model):
    """A compiled engine's profile caps the text rows: set_vocabulary (the service's and
    the CLI's path) refuses a larger vocabulary with the limit, and the old one stays."""
    predictor = Predictor(RowLimitedEngine(tiny_model, 4), TextEmbedder(tiny_model.text_encoder), InferenceConfig(min_size=0))
    version = predictor.set_vocabulary("person; forklift, fork lift; pallet")  # 4 rows
    with pytest.raises(VocabularyError, match="needs 5 text rows.*built for 1 to 4"):
        predictor.set_vocabulary("person; forklift, fork lift; pallet; floor")
    assert predictor.vocabulary_version == version and predictor.vocabulary.num_classes == 3
    predictor(np.zeros((64, 64, 3), np.uint8))


def test_predictions_carry_unit_embeddings_per_segment():
    """For downstream queries and the tracker: each segment's query class embedding and
    CLIP's mask-pooled view (NaN rows where the mask had none), unit length, in order."""
    predictor = Predictor.from_checkpoint(None, stand_in_weights=True, classes="person; car; road; sky; tree",
                                          config=InferenceConfig(min_size=0))
    result = predictor(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8))
    n = len(result.segments)
    assert result.embeddings.shape[0] == n and result.clip_embeddings.shape == result.embeddings.shape
    assert np.allclose(np.linalg.norm(result.embeddings, axis=1), 1, atol=1e-5)
    valid = ~np.isnan(result.clip_embeddings).any(1)
    assert np.allclose(np.linalg.norm(result.clip_embeddings[valid], axis=1), 1, atol=1e-5)
