"""The network step of the pipeline: normalised padded images + text embeddings in,
last-stage outputs out. Backends share this interface so the node and CLI can switch:
torch (here), onnxruntime (engine_onnxruntime.py), tensorrt (engine_tensorrt.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from torch import nn

BACKENDS = ("torch", "onnxruntime", "tensorrt")


class BackendUnavailable(ImportError):
    """A backend whose library is not installed; the message says what to install."""


@dataclass
class EngineOutput:
    """What post-processing needs (Q queries, D text dims, B images)."""

    mask_logits: torch.Tensor  # [B, Q, Hp/4, Wp/4]
    class_embeddings: torch.Tensor  # [B, Q, D]
    clip_embeddings: torch.Tensor  # [B, Q, D]
    clip_mask_valid: torch.Tensor  # [B, Q] bool
    # SED: per-class logits over the vocabulary [B, K, h, w] (its score is their sigmoid);
    # the mask fields above are then empty (Q = 0)
    semantic_logits: torch.Tensor | None = None

    @classmethod
    def semantic(cls, logits: torch.Tensor) -> "EngineOutput":
        empty = logits.new_zeros(logits.shape[0], 0)
        return cls(empty[..., None, None], empty[..., None], empty[..., None], empty.bool(), logits)

    @classmethod
    def from_outputs(cls, names, tensors: list[torch.Tensor]) -> "EngineOutput":
        """From a compiled network's outputs by name (onnx_export.output_names)."""
        if list(names) == ["semantic_logits"]:
            return cls.semantic(tensors[0])
        return cls(*tensors)


def run_in_batches(run, images: torch.Tensor, batch: int) -> list[torch.Tensor]:
    """Feed a fixed-batch engine: split into chunks of `batch`, zero-pad the last one,
    concatenate the outputs and drop the padding."""
    chunks = []
    for start in range(0, images.shape[0], batch):
        chunk = images[start : start + batch]
        count = chunk.shape[0]
        if count < batch:
            chunk = torch.cat([chunk, chunk.new_zeros(batch - count, *chunk.shape[1:])])
        chunks.append([out[:count] for out in run(chunk)])
    return [torch.cat(parts) for parts in zip(*chunks)]


def resolve_device(device: str | torch.device) -> torch.device:
    """A usable torch device, or ValueError saying why not (instead of a deep CUDA error).
    "auto" is the first CUDA device when there is one, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available here; use device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
    return resolved


class Engine(Protocol):
    """What the predictor needs from a backend."""

    name: str
    device: torch.device  # where post-processing runs on the outputs
    input_size: tuple[int, int] | None  # fixed (H, W) of compiled engines, None = any multiple of 32
    void_embedding: torch.Tensor  # [1, D], not normalised
    class_logit_scale: torch.Tensor  # scalar, log scale
    clip_logit_scale: torch.Tensor

    def __call__(self, images: torch.Tensor, text_embeddings: torch.Tensor) -> EngineOutput: ...


class TorchEngine:
    """PyTorch on CPU or CUDA; on CUDA optionally fp16 autocast and CUDA graphs."""

    name = "torch"
    input_size = None

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu", fp16: bool = False, cuda_graphs: bool = False) -> None:
        self.device = resolve_device(device)
        if (fp16 or cuda_graphs) and self.device.type != "cuda":
            raise ValueError("fp16 and CUDA graphs need a CUDA device")
        self.model = model.to(self.device).eval()  # forward runs under inference_mode; the model is not altered
        self.fp16 = fp16
        self.cuda_graphs = cuda_graphs
        self._graphs: dict[tuple, tuple] = {}

    @property
    def void_embedding(self) -> torch.Tensor:
        return self.model.void_embedding

    @property
    def class_logit_scale(self) -> torch.Tensor:
        return self.model.class_logit_scale

    @property
    def clip_logit_scale(self) -> torch.Tensor:
        return self.model.clip_logit_scale

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, text_embeddings: torch.Tensor | None) -> EngineOutput:
        """text_embeddings: [T, D] (EOV-Seg's network uses them; FC-CLIP's does not)."""
        images = images.to(self.device)
        text = text_embeddings.to(self.device) if text_embeddings is not None else None
        if self.cuda_graphs:
            return self._replay(images, text)
        return self._run(images, text)

    def _run(self, images: torch.Tensor, text: torch.Tensor) -> EngineOutput:
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.fp16):
            out = self.model(images, text)
        if self.model.family == "sed":
            return EngineOutput.semantic(out.logits.float())
        return EngineOutput(
            out.mask_logits[-1].float(), out.class_embeddings[-1].float(), out.clip_embeddings.float(), out.clip_mask_valid
        )

    def _replay(self, images: torch.Tensor, text: torch.Tensor) -> EngineOutput:
        """One captured graph per (image shape, vocabulary rows); a new vocabulary size
        captures once more (a few forward passes), it never rebuilds the model."""
        key = (tuple(images.shape), None if text is None else tuple(text.shape))
        if key not in self._graphs:
            static_images, static_text = images.clone(), None if text is None else text.clone()
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm up kernels and allocator before capture
                    self._run(static_images, static_text)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._run(static_images, static_text)
            self._graphs[key] = (graph, static_images, static_text, static_out)
        graph, static_images, static_text, static_out = self._graphs[key]
        static_images.copy_(images)
        if text is not None:
            static_text.copy_(text)
        graph.replay()
        semantic = None if static_out.semantic_logits is None else static_out.semantic_logits.clone()
        return EngineOutput(*(t.clone() for t in (
            static_out.mask_logits, static_out.class_embeddings, static_out.clip_embeddings, static_out.clip_mask_valid
        )), semantic)


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
        from ovseg_ros.engine_onnxruntime import OnnxRuntimeEngine

        engine = OnnxRuntimeEngine(engine_file, device)
    else:
        from ovseg_ros.engine_tensorrt import BuildConfig, TensorRTEngine, build_engine

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
