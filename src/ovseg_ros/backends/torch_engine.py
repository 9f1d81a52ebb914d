"""The torch backend: the network itself, on CPU or CUDA (optionally fp16 autocast and
CUDA graphs)."""

from __future__ import annotations

import torch
from torch import nn

from ovseg_ros.backends.base import EngineOutput, resolve_device


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
