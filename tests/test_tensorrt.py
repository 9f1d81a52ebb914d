"""TensorRT engines from the exported ONNX (needs TensorRT and a CUDA GPU; skipped with
the reason otherwise: TensorRT cannot be installed on this project's CI machines)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from ovseg_ros.backends.tensorrt_engine import BuildConfig, TensorRTEngine, build_engine
from ovseg_ros.fp16_calibration import calibrate_export
from ovseg_ros.onnx_export import export_onnx
from ovseg_ros.preprocess import preprocess

# Marks, not a module-level skip: ROS 2 Humble's launch_testing pytest plugin stops
# collecting the whole session when a module raises Skipped while being imported.
pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("tensorrt") is None,
        reason="TensorRT is not installed (its PyPI packages download from NVIDIA at install time)",
    ),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="TensorRT needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def onnx_file(parity_model, tmp_path_factory):
    path = export_onnx(parity_model, tmp_path_factory.mktemp("trt") / "r50.onnx", 256, 352)
    calibrate_export(path, parity_model)  # the fp32 layer set an fp16 engine needs
    return path


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_runs_two_vocabulary_sizes(onnx_file, parity_model, parity_folder, tmp_path, precision):
    path = build_engine(onnx_file, BuildConfig(precision=precision, max_text_rows=64, cache_dir=tmp_path))
    assert build_engine(onnx_file, BuildConfig(precision=precision, max_text_rows=64, cache_dir=tmp_path)) == path  # cached
    engine = TensorRTEngine(path)
    data = np.load(parity_folder / "street.npz")
    batch = preprocess([data["image"]], parity_model.pixel_mean, parity_model.pixel_std, min_size=0, fixed_size=engine.input_size)
    for rows in (8, 6):
        text = torch.from_numpy(data["text_classifier"])[:rows]
        out = engine(batch.images, text)
        assert out.mask_logits.shape == (1, 100, 64, 88) and torch.isfinite(out.mask_logits).all()
    assert engine.precision == precision and engine.text_rows == (1, 32, 64)
    with pytest.raises(ValueError, match="built for 1 to 64"):
        engine(batch.images, torch.zeros(65, text.shape[1]))
    out = engine(batch.images, torch.from_numpy(data["text_classifier"]))
    masks = out.mask_logits[0].cpu().numpy() > 0
    reference = data["stage2_mask_logits"] > 0
    iou = (masks & reference).sum((1, 2)) / np.maximum((masks | reference).sum((1, 2)), 1)
    assert np.median(iou) >= (0.99 if precision == "fp32" else 0.95)
