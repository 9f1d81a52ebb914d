"""TensorRT: build an engine from the exported ONNX, cache it, run it.

Written against TensorRT's documented Python API (10.x, the JetPack 6 version, and 11.x);
TensorRT cannot be installed on this project's CI machines, so this module is
import-guarded and its tests skip without it.

- Plugins are initialised so that ONNX DeformConv maps to TensorRT's modulated
  deformable convolution.
- The vocabulary size is a dynamic input: one optimisation profile over the number of
  text rows (min/opt/max configurable); a new vocabulary only changes the input shape.
- fp16 on TensorRT 10 (weak typing): FP16 enabled, with fp32 forced on the layers that
  overflow in half precision (normalisations, softmax, reductions and the decoders'
  unnormalised mask-pooling products) and on FC-CLIP's pixel decoder, which the
  published code runs in fp32. TensorRT 11 only builds strongly typed networks:
  precision comes from the ONNX file itself (convert it to mixed precision first, e.g.
  with ModelOpt AutoCast); an fp32 ONNX builds an fp32 engine.
- Engines are cached on disk, keyed by TensorRT version, GPU, input size, precision,
  profile and the ONNX file's hash; a timing cache speeds rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ovseg_ros.engine import BackendUnavailable, EngineOutput, resolve_device, run_in_batches
from ovseg_ros.onnx_export import INPUT_NAMES, OUTPUT_NAMES, postprocess_tensors, read_metadata

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path.home() / ".cache" / "ovseg_ros" / "engines"


class EngineBuildError(RuntimeError):
    """TensorRT could not parse or build; the message carries TensorRT's errors."""


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(
            "the tensorrt backend needs TensorRT's Python bindings (10.x or 11.x): on Jetson they come with "
            "JetPack (python3-libnvinfer); on x86 install TensorRT from NVIDIA. Or use backend onnxruntime/torch."
        ) from exc
    return trt


@dataclass(frozen=True)
class BuildConfig:
    precision: str = "fp16"  # "fp16" | "fp32"
    min_text_rows: int = 1
    opt_text_rows: int = 32
    max_text_rows: int = 512
    workspace_gib: float = 4.0
    cache_dir: Path = field(default=DEFAULT_CACHE)
    force_rebuild: bool = False

    def __post_init__(self) -> None:
        if self.precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be fp16 or fp32, got {self.precision!r}")
        if not 1 <= self.min_text_rows <= self.opt_text_rows <= self.max_text_rows:
            raise ValueError("need 1 <= min_text_rows <= opt_text_rows <= max_text_rows")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(trt_version: str, gpu: str, input_size, precision: str, profile: tuple[int, int, int], onnx_hash: str) -> str:
    fields = {"trt": trt_version, "gpu": gpu, "input": list(input_size), "precision": precision, "profile": list(profile), "onnx": onnx_hash}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


def gpu_identity(device: torch.device) -> str:
    props = torch.cuda.get_device_properties(device)
    return f"{props.name} sm_{props.major}{props.minor}"


def _keep_fp32(trt, layer) -> bool:
    fp32_types = {trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX, trt.LayerType.REDUCE}
    if layer.type in fp32_types:
        return True
    # FC-CLIP's pixel decoder runs in fp32 as published (deformable sampling is not half-safe)
    if "pixel_decoder" in layer.name:
        return True
    # the decoders' mask-pooling products sum features over thousands of pixels
    pooling = "mask_heads" in layer.name or "transformer_decoder" in layer.name
    return pooling and layer.type in {trt.LayerType.MATRIX_MULTIPLY, trt.LayerType.EINSUM}


def build_engine(onnx_path: str | Path, config: BuildConfig = BuildConfig(), device: str = "cuda") -> Path:
    """Serialised engine for `onnx_path` (built, or taken from the cache)."""
    trt = import_tensorrt()
    onnx_path = Path(onnx_path)
    meta = read_metadata(onnx_path)
    torch_device = resolve_device(device)
    profile_rows = (config.min_text_rows, config.opt_text_rows, config.max_text_rows)
    key = cache_key(trt.__version__, gpu_identity(torch_device), meta["input_size"], config.precision, profile_rows, file_sha256(onnx_path))
    cache_dir = Path(config.cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    engine_path = cache_dir / f"{key}.engine"
    if engine_path.exists() and not config.force_rebuild:
        log.info("using cached engine %s", engine_path)
        return engine_path

    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    strongly_typed = int(trt.__version__.split(".")[0]) >= 11
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_path}:\n{errors}")

    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(config.workspace_gib * (1 << 30)))
    if "text_embeddings" in meta["inputs"]:  # EOV-Seg: the vocabulary size is a dynamic input
        profile = builder.create_optimization_profile()
        dim = meta["text_dim"]
        profile.set_shape("text_embeddings", (profile_rows[0], dim), (profile_rows[1], dim), (profile_rows[2], dim))
        builder_config.add_optimization_profile(profile)
    if config.precision == "fp16":
        if strongly_typed:
            log.warning("TensorRT %s builds strongly typed networks: the engine has the ONNX file's precision. "
                        "For fp16, convert the ONNX to mixed precision first (e.g. ModelOpt AutoCast).", trt.__version__)
        else:
            builder_config.set_flag(trt.BuilderFlag.FP16)
            builder_config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            for i in range(network.num_layers):
                layer = network.get_layer(i)
                if _keep_fp32(trt, layer):
                    layer.precision = trt.float32
                    for j in range(layer.num_outputs):
                        layer.set_output_type(j, trt.float32)

    timing_path = cache_dir / "timing.cache"
    timing_cache = builder_config.create_timing_cache(timing_path.read_bytes() if timing_path.exists() else b"")
    builder_config.set_timing_cache(timing_cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, builder_config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    timing_path.write_bytes(builder_config.get_timing_cache().serialize())
    engine_path.write_bytes(serialized)
    sidecar = {"onnx": str(onnx_path), "metadata": meta, "build": {**asdict(config), "cache_dir": str(config.cache_dir)}, "tensorrt": trt.__version__}
    engine_path.with_suffix(".json").write_text(json.dumps(sidecar, indent=1))
    log.info("built %s", engine_path)
    return engine_path


class TensorRTEngine:
    """Runs a serialised engine on a CUDA stream with torch-allocated device buffers."""

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, device: str = "cuda") -> None:
        trt = import_tensorrt()
        self.trt = trt
        self.device = resolve_device(device)
        if self.device.type != "cuda":
            raise ValueError("the tensorrt backend runs on a CUDA device")
        engine_path = Path(engine_path)
        sidecar = engine_path.with_suffix(".json")
        if not sidecar.exists():
            raise FileNotFoundError(f"{sidecar} is missing: build engines with `ovseg build-engine`")
        self.metadata = json.loads(sidecar.read_text())["metadata"]
        logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(logger, "")
        torch.cuda.set_device(self.device)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise EngineBuildError(f"{engine_path} could not be deserialised (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(self.device)
        self.batch, _, height, width = self.metadata["input_size"]
        self.input_size = (height, width)
        self.void_embedding, self.class_logit_scale, self.clip_logit_scale = postprocess_tensors(self.metadata, self.device)
        self.inputs = tuple(self.metadata.get("inputs", INPUT_NAMES))
        self._dtypes = {name: self._torch_dtype(name) for name in (*self.inputs, *OUTPUT_NAMES)}
        self._outputs: dict[str, torch.Tensor] = {}

    def _torch_dtype(self, name: str) -> torch.dtype:
        trt = self.trt
        mapping = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.bool: torch.bool, trt.int64: torch.int64}
        return mapping[self.engine.get_tensor_dtype(name)]

    def __call__(self, images: torch.Tensor, text_embeddings: torch.Tensor) -> EngineOutput:
        has_text = "text_embeddings" in self.inputs  # FC-CLIP's engine takes the images only
        if has_text:
            text = text_embeddings.to(self.device, self._dtypes["text_embeddings"]).contiguous()
            self.context.set_input_shape("text_embeddings", tuple(text.shape))  # a new vocabulary size

        def run(chunk: torch.Tensor) -> list[torch.Tensor]:
            chunk = chunk.to(self.device, self._dtypes["images"]).contiguous()
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            self.context.set_tensor_address("images", chunk.data_ptr())
            if has_text:
                self.context.set_tensor_address("text_embeddings", text.data_ptr())
            outputs = []
            for name in OUTPUT_NAMES:
                shape = tuple(self.context.get_tensor_shape(name))
                buffer = self._outputs.get(name)
                if buffer is None or tuple(buffer.shape) != shape:
                    buffer = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
                    self._outputs[name] = buffer
                self.context.set_tensor_address(name, buffer.data_ptr())
                outputs.append(buffer)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
            return [o.clone().float() if o.is_floating_point() else o.clone().bool() for o in outputs]

        return EngineOutput(*run_in_batches(run, images, self.batch))
