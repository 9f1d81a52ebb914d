"""ONNX export with a runtime vocabulary: onnxruntime on the exported stand-in model
reproduces the parity fixtures, and serves a second vocabulary size without re-export."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from ovseg_ros.config import InferenceConfig
from ovseg_ros.backends import BackendUnavailable, TorchEngine, create_engine
from ovseg_ros.modeling.eov_seg.eov_seg import append_void
from ovseg_ros.onnx_export import OPSET, export_onnx, read_metadata
from ovseg_ros.postprocess import class_logits, classify_masks, semantic_probabilities, upsample_masks
from ovseg_ros.predictor import Predictor
from ovseg_ros.preprocess import preprocess
from ovseg_ros.vocabulary import TextEmbedder, Vocabulary

# a mark, not a module-level skip (see test_tensorrt.py)
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed: pip install -e .[onnx]"
)


@pytest.fixture(scope="module")
def street(parity_folder, parity_cases):
    case = next(c for c in parity_cases if c["name"] == "street")
    return case, np.load(parity_folder / "street.npz")


@pytest.fixture(scope="module")
def onnx_file(parity_model, street, tmp_path_factory):
    case, _ = street
    height, width = case["padded_size"]
    return export_onnx(parity_model, tmp_path_factory.mktemp("onnx") / "eovseg_r50.onnx", height, width)


@pytest.fixture(scope="module")
def ort_engine(onnx_file, parity_model):
    return create_engine("onnxruntime", parity_model, "cpu", str(onnx_file))


def test_graph_has_no_plugin_ops_and_dynamic_text(onnx_file):
    import onnx

    model = onnx.load(str(onnx_file), load_external_data=False)
    assert model.opset_import[0].version == OPSET == 17
    ops = {node.op_type for node in model.graph.node}
    assert "DeformConv" not in ops and "GridSample" in ops  # the neck's 3 deformable convs, decomposed
    assert "Shape" not in ops  # sizes folded: nothing computes shapes at run time
    text = next(i for i in model.graph.input if i.name == "text_embeddings")
    assert text.type.tensor_type.shape.dim[0].dim_param == "text_rows"
    meta = read_metadata(onnx_file)
    assert meta["input_size"] == [1, 3, 256, 352] and meta["text_dim"] == 1024


def test_onnxruntime_reproduces_the_fixtures(ort_engine, parity_model, street):
    case, data = street
    vocabulary = Vocabulary.parse(case["classes"], case["things"])
    text = torch.from_numpy(data["text_classifier"])
    batch = preprocess([data["image"]], parity_model.pixel_mean, parity_model.pixel_std, min_size=0, fixed_size=ort_engine.input_size)
    out = ort_engine(batch.images, text)
    _, class_index = TextEmbedder(parity_model.text_encoder).classifier(vocabulary)
    text_with_void = append_void(text, ort_engine.void_embedding)
    logits = class_logits(out.class_embeddings, text_with_void, ort_engine.class_logit_scale, class_index, vocabulary.num_classes)[0]
    assert np.abs(logits.numpy() - data["stage2_cls_logits"]).max() <= 2e-3
    mask_diff = np.abs(out.mask_logits[0].numpy() - data["stage2_mask_logits"])
    assert mask_diff.max() <= 5e-3 and mask_diff.mean() <= 1e-4
    seen = torch.from_numpy(data["category_overlapping_mask"]).bool()
    mask_cls = classify_masks(out.class_embeddings, out.clip_embeddings, out.clip_mask_valid, text_with_void, class_index, seen,
                              ort_engine.class_logit_scale, ort_engine.clip_logit_scale, 0.4, 0.8)[0]
    masks = upsample_masks(out.mask_logits, batch.padded_size, batch.resized_sizes[0], batch.input_sizes[0])[0]
    assert np.abs(semantic_probabilities(mask_cls, masks).numpy() - data["sem_seg"]).max() <= 2e-3


def test_another_vocabulary_size_without_re_export(ort_engine, parity_model, street, parity_folder):
    """The indoor fixture's 6 text rows on the same exported file (exported with 8 rows
    in mind) agree with eager torch on the same inputs."""
    case, data = street
    other_text = torch.from_numpy(np.load(parity_folder / "indoor.npz")["text_classifier"])
    assert other_text.shape[0] != data["text_classifier"].shape[0]
    batch = preprocess([data["image"]], parity_model.pixel_mean, parity_model.pixel_std, min_size=0, fixed_size=ort_engine.input_size)
    ours = ort_engine(batch.images, other_text)
    reference = TorchEngine(parity_model)(batch.images, other_text)
    assert (ours.class_embeddings - reference.class_embeddings).abs().max() <= 2e-3
    diff = (ours.mask_logits - reference.mask_logits).abs()
    assert diff.max() <= 5e-3 and diff.mean() <= 1e-4
    assert (ours.clip_embeddings - reference.clip_embeddings).abs().max() <= 2e-3


def test_predictor_with_onnxruntime_backend(ort_engine, parity_model, street):
    case, data = street
    predictor = Predictor(ort_engine, TextEmbedder(parity_model.text_encoder), InferenceConfig(min_size=0), parity_model.config)
    predictor.set_vocabulary(case["classes"], case["things"])
    result = predictor(data["image"], return_probabilities=True)
    assert np.abs(result.probabilities - data["sem_seg"]).max() <= 2e-3
    np.testing.assert_array_equal(result.panoptic, data["panoptic_seg"])


def test_engine_from_other_weights_is_refused(onnx_file, tiny_model):
    from ovseg_ros.modeling import EOVSeg

    other = EOVSeg(tiny_model.config)
    with pytest.raises(ValueError, match="other weights"):
        create_engine("onnxruntime", other, "cpu", str(onnx_file))


def test_compiled_backend_needs_an_engine_file(tiny_model):
    with pytest.raises(ValueError, match="ovseg export"):
        create_engine("onnxruntime", tiny_model, "cpu", None)


def test_missing_tensorrt_names_what_to_install(onnx_file):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        from ovseg_ros.backends.tensorrt_engine import import_tensorrt

        with pytest.raises(BackendUnavailable, match="TensorRT"):
            import_tensorrt()
    else:
        pytest.skip(reason="tensorrt is installed here; the missing-backend message cannot be observed")


def test_fixed_size_engines_fit_any_image(ort_engine, parity_model):
    """Compiled engines have one input size: other images are fitted and padded into it."""
    predictor = Predictor(ort_engine, TextEmbedder(parity_model.text_encoder), InferenceConfig(), parity_model.config)
    predictor.set_vocabulary("person; car; road")
    result = predictor(np.zeros((480, 640, 3), np.uint8))
    assert result.panoptic.shape == (480, 640)
