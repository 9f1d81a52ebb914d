"""What every backend shares: the engine interface, its output, and small helpers. The
backends themselves: torch (torch_engine.py), onnxruntime (onnxruntime_engine.py),
tensorrt (tensorrt_engine.py); `ovseg_ros.backends.create_engine` picks one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

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
