"""The network step of the pipeline: normalised padded images + text embeddings in,
last-stage outputs out. Backends share one interface (base.Engine) so the node and the
CLI can switch: torch, onnxruntime, tensorrt (each in a module of its own, imported only
when asked for, so none needs the others' libraries)."""

from __future__ import annotations

from torch import nn

from ovseg_ros.backends.base import BACKENDS, BackendUnavailable, Engine, EngineOutput, resolve_device, run_in_batches
from ovseg_ros.backends.torch_engine import TorchEngine

__all__ = ["BACKENDS", "BackendUnavailable", "Engine", "EngineOutput", "TorchEngine", "check_same_weights", "create_engine",
           "resolve_device", "run_in_batches"]


def create_engine(
    backend: str,
    model: nn.Module,
    device: str = "cpu",
    engine_file: str | None = None,
    fp16: bool = False,
    cuda_graphs: bool = False,
) -> Engine:
    """The engine for a backend name. Compiled backends take `engine_file`: an ONNX file
    from `ovseg export` (onnxruntime, tensorrt) or a built .engine (tensorrt); it must
    come from the same weights as `model`, whose text tower encodes the vocabulary."""
    if backend == "torch":
        return TorchEngine(model, device, fp16=fp16, cuda_graphs=cuda_graphs)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if not engine_file:
        raise ValueError(f"backend {backend} needs an engine file: run `ovseg export` first and pass the .onnx")
    if backend == "onnxruntime":
        from ovseg_ros.backends.onnxruntime_engine import OnnxRuntimeEngine

        engine = OnnxRuntimeEngine(engine_file, device)
    else:
        from ovseg_ros.backends.tensorrt_engine import BuildConfig, TensorRTEngine, build_engine

        path = engine_file
        if str(engine_file).endswith(".onnx"):
            path = build_engine(engine_file, BuildConfig(precision="fp16" if fp16 else "fp32"), device)
        engine = TensorRTEngine(path, device)
    check_same_weights(engine.metadata, model)
    return engine


def check_same_weights(metadata: dict, model: nn.Module) -> None:
    from ovseg_ros.onnx_export import weights_hash

    if metadata.get("weights_sha256") != weights_hash(model):
        raise ValueError(
            "the engine file was exported from other weights than the checkpoint given; "
            "export it again from this checkpoint (`ovseg export`)"
        )
