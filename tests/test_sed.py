"""SED beside the other models: the semantic-only predictor (a segment per class present,
its sigmoid scores, early rejection from the inference settings), its checkpoints
recognised by the project's loader, and its exported graph through onnxruntime (with
and without early rejection in static form)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from ovseg_ros.checkpoint import CheckpointError, check_model, detect_model, official_state_dict
from ovseg_ros.config import InferenceConfig, model_config
from ovseg_ros.modeling import build_network
from ovseg_ros.onnx_export import export_onnx, read_metadata
from ovseg_ros.predictor import Predictor
from ovseg_ros.vocabulary import VocabularyError

CLASSES = "person; car, automobile; road; sky; building; tree; bicycle; dog; bench; sign"


@pytest.fixture(scope="module")
def image():
    return (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def sed_predictor():
    return Predictor.from_checkpoint(None, model="sed", stand_in_weights=True, classes=CLASSES, things="person; car")


def test_semantic_predictor_gives_a_segment_per_class_and_no_things(sed_predictor, image):
    state = sed_predictor._state
    assert tuple(state.text.shape) == (10, 80, 640) and not state.is_thing.any()  # a feature per template
    result = sed_predictor(image, return_probabilities=True)
    assert result.probabilities.shape == (10, 96, 128)
    assert 0 <= result.probabilities.min() and result.probabilities.max() <= 1  # SED's scores are sigmoids
    present = sorted(set(result.semantic.ravel().tolist()) - {-1})
    assert [s.category for s in result.segments] == present
    for s in result.segments:
        region = result.semantic == s.category
        assert np.array_equal(result.panoptic == s.id, region) and not s.is_thing
        assert s.score == pytest.approx(float(result.probabilities[s.category][region].mean()), rel=1e-4)


def test_early_rejection_comes_from_the_inference_settings():
    predictor = Predictor.from_checkpoint(None, model="sed", stand_in_weights=True,
                                          config=InferenceConfig(early_rejection_topk=8))
    assert predictor.engine.model.default_rejection.topk == 8
    plain = Predictor.from_checkpoint(None, model="sed", stand_in_weights=True)
    assert plain.engine.model.default_rejection is None


def test_checkpoints_are_recognised_and_another_model_is_refused():
    with torch.device("meta"):
        network = build_network(model_config("sed", "L"))
    state_dict = official_state_dict(network)
    assert detect_model(state_dict) == ("sed", "L")
    assert next(iter(state_dict)).startswith("sem_seg_head.predictor.")  # as FC-CLIP's head: told apart by its keys
    with pytest.raises(CheckpointError, match="--model sed --variant L"):
        check_model(state_dict, "fc_clip", None)


@pytest.mark.slow  # two 768 x 768 exports of SED B
@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")
def test_onnxruntime_reproduces_torch_with_and_without_static_rejection(sed_predictor, image, tmp_path):
    model = sed_predictor.engine.model
    plain = export_onnx(model, tmp_path / "sed.onnx", 768, 768)
    meta = read_metadata(plain)
    assert meta["outputs"] == ["semantic_logits"] and meta["text_row_shape"] == [80, 640] and meta["min_text_rows"] == 1
    with pytest.raises(ValueError, match="768x768"):
        export_onnx(model, tmp_path / "wrong.onnx", 480, 640)
    reference = sed_predictor(image, return_probabilities=True).probabilities
    ort = Predictor.from_checkpoint(None, model="sed", stand_in_weights=True, classes=CLASSES, backend="onnxruntime",
                                    engine_file=str(plain))
    assert float(np.abs(ort(image, return_probabilities=True).probabilities - reference).max()) < 1e-4

    # keep every class: the static form scores as no rejection; keep fewer: the rest score 0
    keep = export_onnx(model, tmp_path / "sed_keep.onnx", 768, 768, early_rejection_keep=10, early_rejection_topk=10)
    ort = Predictor.from_checkpoint(None, model="sed", stand_in_weights=True, classes=CLASSES, backend="onnxruntime",
                                    engine_file=str(keep))
    assert float(np.abs(ort(image, return_probabilities=True).probabilities - reference).max()) < 1e-4
    with pytest.raises(VocabularyError, match="keeps 10 classes"):
        ort.set_vocabulary("person; car; road")
    assert ort.vocabulary.num_classes == 10  # the old vocabulary stays
