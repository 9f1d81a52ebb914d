"""The network through onnxruntime (CPU; CUDA when onnxruntime-gpu is installed)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ovseg_ros.backends.base import BackendUnavailable, EngineOutput, run_in_batches
from ovseg_ros.onnx_export import postprocess_tensors, read_metadata


class OnnxRuntimeEngine:
    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable(
                "the onnxruntime backend needs onnxruntime: pip install onnxruntime (or onnxruntime-gpu for CUDA)"
            ) from exc
        self.path = Path(onnx_path)
        self.metadata = read_metadata(self.path)
        providers = ["CPUExecutionProvider"]
        has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        if str(device).startswith("cuda") or (str(device) == "auto" and has_cuda):
            if not has_cuda:
                raise BackendUnavailable("device cuda with onnxruntime needs onnxruntime-gpu (CUDAExecutionProvider)")
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        # idle threads must not spin: post-processing runs on the same cores right after
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        self.batch, _, height, width = self.metadata["input_size"]
        self.input_size = (height, width)
        self.device = torch.device("cpu")  # outputs come back as host arrays
        self.void_embedding, self.class_logit_scale, self.clip_logit_scale = postprocess_tensors(self.metadata)

    def check_text_rows(self, rows: int) -> None:
        """A SED file exported with early rejection keeps a fixed number of classes: fewer is refused."""
        low = self.metadata["min_text_rows"]
        if rows < low:
            raise ValueError(f"{self.path} keeps {low} classes after early rejection: give at least {low} classes, "
                             "or export without --early-rejection-keep")

    def __call__(self, images: torch.Tensor, text_embeddings: torch.Tensor) -> EngineOutput:
        feeds = {}
        if "text_embeddings" in self.metadata["inputs"]:  # EOV-Seg, SED; FC-CLIP's and SAN's networks take the images only
            self.check_text_rows(int(text_embeddings.shape[0]))
            feeds["text_embeddings"] = text_embeddings.detach().float().cpu().contiguous().numpy()
        outputs = self.metadata["outputs"]

        def run(chunk: torch.Tensor) -> list[torch.Tensor]:
            feeds["images"] = chunk.detach().float().cpu().contiguous().numpy()
            return [torch.from_numpy(a) for a in self.session.run(list(outputs), feeds)]

        return EngineOutput.from_outputs(outputs, run_in_batches(run, images, self.batch))
