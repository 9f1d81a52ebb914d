"""The network step of the pipeline: normalised padded images + text embeddings in,
last-stage outputs out. Backends share this interface so the node and CLI can switch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ovseg_ros.modeling import EOVSeg


@dataclass
class EngineOutput:
    """What post-processing needs (Q queries, D text dims, B images)."""

    mask_logits: torch.Tensor  # [B, Q, Hp/4, Wp/4]
    class_embeddings: torch.Tensor  # [B, Q, D]
    clip_embeddings: torch.Tensor  # [B, Q, D]
    clip_mask_valid: torch.Tensor  # [B, Q] bool


def resolve_device(device: str | torch.device) -> torch.device:
    """A usable torch device, or ValueError saying why not (instead of a deep CUDA error)."""
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


class TorchEngine:
    """Eager PyTorch on CPU or CUDA."""

    name = "torch"

    def __init__(self, model: EOVSeg, device: torch.device | str = "cpu") -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @property
    def void_embedding(self) -> torch.Tensor:
        return self.model.void_embedding

    @property
    def class_logit_scale(self) -> torch.Tensor:
        return self.model.decoder.mask_heads[-1].logit_scale

    @property
    def clip_logit_scale(self) -> torch.Tensor:
        return self.model.clip_logit_scale

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, text_embeddings: torch.Tensor) -> EngineOutput:
        out = self.model(images.to(self.device), text_embeddings.to(self.device))
        return EngineOutput(out.mask_logits[-1], out.class_embeddings[-1], out.clip_embeddings, out.clip_mask_valid)
