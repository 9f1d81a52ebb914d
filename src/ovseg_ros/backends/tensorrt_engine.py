"""TensorRT: build an engine from the exported ONNX, cache it, run it.

A thin layer over TensorRT's documented Python API, for 8.6 (JetPack 6.0), 10.x (JetPack
6.1/6.2 ship 10.3; desktops) and 11.x. TensorRT cannot be installed on this project's
CI machines, so this module is import-guarded; every decision it takes (flags, which
layers stay fp32, caches, profile limits) is a pure function in tensorrt_plan.py,
tested without TensorRT.

- The exported file has no plugin ops (onnx_export.py): plugins are not initialised.
- The vocabulary size is a dynamic input: one optimisation profile over the number of
  text rows (min/opt/max configurable); a new vocabulary only changes the input shape,
  and one with more rows than the profile's maximum is refused when it is set.
- fp16: on 8.6 and 10.0-10.11 (weak typing) FP16 is enabled and the measured fp32 set
  (mixed_precision.py, kept in the ONNX metadata by `ovseg export`) is constrained to
  fp32 under OBEY_PRECISION_CONSTRAINTS, on float layers only. From 10.12 (where those
  controls are deprecated) and on 11 (where they are gone) the network is strongly
  typed and built from a mixed-precision ONNX written with the same fp32 set.
- Engines are cached on disk, keyed by TensorRT version, GPU, input size, precision,
  profile and the ONNX file's hash; timing caches are kept per TensorRT version and GPU.
  The sidecar JSON records the precision the engine really has.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ovseg_ros.backends.base import BackendUnavailable, EngineOutput, resolve_device, run_in_batches
from ovseg_ros.backends.tensorrt_plan import (
    BuildPlan,
    build_plan,
    check_text_rows,
    check_version,
    keep_layer_fp32,
    onnx_node_of,
    parse_version,
    timing_cache_name,
)
from ovseg_ros.mixed_precision import FP32_NODES_KEY, Fp32Set, mixed_precision_model
from ovseg_ros.onnx_export import INPUT_NAMES, postprocess_tensors, read_metadata

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path.home() / ".cache" / "ovseg_ros" / "engines"


class EngineBuildError(RuntimeError):
    """TensorRT could not parse or build; the message carries TensorRT's errors."""


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(
            "the tensorrt backend needs TensorRT's Python bindings (8.6 or newer): on Jetson they come with "
            "JetPack 6 (python3-libnvinfer); on x86 install TensorRT from NVIDIA. Or use backend onnxruntime/torch."
        ) from exc
    check_version(parse_version(trt.__version__))
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


def _dtype_name(dtype) -> str:
    return getattr(dtype, "name", str(dtype).rsplit(".", 1)[-1])


def _constrain_fp32_layers(trt, network, fp32_nodes: list[str]) -> int:
    """Weak typing: pin the measured fp32 set's float layers to fp32; returns how many."""
    count = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        node = onnx_node_of(layer.name, getattr(layer, "metadata", None), fp32_nodes)
        inputs = [layer.get_input(j) for j in range(layer.num_inputs)]
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if keep_layer_fp32(
            layer.type.name,
            [_dtype_name(t.dtype) if t is not None else None for t in inputs],
            [_dtype_name(t.dtype) for t in outputs],
            any(t.is_shape_tensor for t in outputs),
            node,
            fp32_nodes,
        ):
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            count += 1
    return count


def _parse(trt, builder, logger, plan: BuildPlan, onnx_path: Path):
    flags = 0
    if plan.explicit_batch_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if plan.strongly_typed_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if plan.native_instancenorm and hasattr(trt, "OnnxParserFlag"):
        parser.set_flag(trt.OnnxParserFlag.NATIVE_INSTANCENORM)  # else 8.6 uses a plugin for it
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT {trt.__version__} could not parse {onnx_path}:\n{errors}")
    return network, parser


def _fp32_nodes(meta: dict, onnx_path: Path) -> list[str]:
    if FP32_NODES_KEY not in meta:
        raise EngineBuildError(
            f"{onnx_path} has no measured fp32 layer set, which an fp16 engine needs: export it again with "
            "`ovseg export` (it measures the set), or build with --precision fp32"
        )
    return Fp32Set.from_json(meta[FP32_NODES_KEY]).nodes


def build_engine(onnx_path: str | Path, config: BuildConfig = BuildConfig(), device: str = "cuda") -> Path:
    """Serialised engine for `onnx_path` (built, or taken from the cache)."""
    trt = import_tensorrt()
    onnx_path = Path(onnx_path)
    meta = read_metadata(onnx_path)
    plan = build_plan(parse_version(trt.__version__), config.precision)
    fp32_nodes = _fp32_nodes(meta, onnx_path) if plan.precision == "fp16" else []
    torch_device = resolve_device(device)
    gpu = gpu_identity(torch_device)
    floor = meta["min_text_rows"]  # a SED file with static early rejection keeps that many classes
    profile_rows = (max(config.min_text_rows, floor), max(config.opt_text_rows, floor), max(config.max_text_rows, floor))
    key = cache_key(trt.__version__, gpu, meta["input_size"], plan.precision, profile_rows, file_sha256(onnx_path))
    cache_dir = Path(config.cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    engine_path = cache_dir / f"{key}.engine"
    if engine_path.exists() and engine_path.with_suffix(".json").exists() and not config.force_rebuild:
        log.info("using cached engine %s", engine_path)
        return engine_path

    source = onnx_path
    if plan.mixed_precision_onnx:  # strongly typed: the file itself says which layers are fp16
        import onnx

        source = cache_dir / f"{key}.mixed.onnx"
        onnx.save(mixed_precision_model(onnx.load(str(onnx_path)), fp32_nodes), str(source))
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, plan, source)
    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(config.workspace_gib * (1 << 30)))
    if "text_embeddings" in meta["inputs"]:  # EOV-Seg, SED: the vocabulary size is a dynamic input
        profile = builder.create_optimization_profile()
        row = tuple(meta["text_row_shape"])  # [D], SED's [80, D]
        profile.set_shape("text_embeddings", (profile_rows[0], *row), (profile_rows[1], *row), (profile_rows[2], *row))
        builder_config.add_optimization_profile(profile)
    constrained = 0
    if plan.fp16_flag:
        builder_config.set_flag(trt.BuilderFlag.FP16)
    if plan.obey_precision_constraints:
        builder_config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        constrained = _constrain_fp32_layers(trt, network, fp32_nodes)
        log.info("%d of %d layers kept in fp32 (measured set of %d ONNX nodes)", constrained, network.num_layers, len(fp32_nodes))

    timing_path = cache_dir / timing_cache_name(trt.__version__, gpu)
    timing_cache = builder_config.create_timing_cache(timing_path.read_bytes() if timing_path.exists() else b"")
    if not builder_config.set_timing_cache(timing_cache, ignore_mismatch=False):
        log.warning("timing cache %s does not fit this TensorRT/GPU: building without it", timing_path)
        builder_config.set_timing_cache(builder_config.create_timing_cache(b""), ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, builder_config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT {trt.__version__} failed to build an engine from {source} (see its log above)")
    timing_path.write_bytes(builder_config.get_timing_cache().serialize())
    engine_path.write_bytes(serialized)
    sidecar = {
        "onnx": str(onnx_path), "built_from": str(source), "metadata": meta,
        "build": {**asdict(config), "cache_dir": str(config.cache_dir)},
        "tensorrt": trt.__version__, "gpu": gpu,
        "precision": plan.precision,  # what the engine has, not only what was asked
        "strongly_typed": plan.strongly_typed, "fp32_layers": constrained, "fp32_nodes": len(fp32_nodes),
        "text_rows": list(profile_rows) if "text_embeddings" in meta["inputs"] else None,
    }
    engine_path.with_suffix(".json").write_text(json.dumps(sidecar, indent=1))
    log.info("built %s (%s, TensorRT %s)", engine_path, plan.precision, trt.__version__)
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
        built = json.loads(sidecar.read_text())
        self.metadata = built["metadata"]
        self.precision = built.get("precision")
        logger = trt.Logger(trt.Logger.WARNING)  # no plugin ops in our files: no plugin library to load
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
        self.outputs = tuple(self.metadata["outputs"])
        self._dtypes = {name: self._torch_dtype(name) for name in (*self.inputs, *self.outputs)}
        self._outputs: dict[str, torch.Tensor] = {}
        self.text_rows = None  # (min, opt, max) of the profile; None: the engine takes no text
        if "text_embeddings" in self.inputs:
            low, opt, high = self.engine.get_tensor_profile_shape("text_embeddings", 0)
            self.text_rows = (int(low[0]), int(opt[0]), int(high[0]))

    def check_text_rows(self, rows: int) -> None:
        """Raises ValueError for a vocabulary the profile cannot take (before it is set)."""
        if self.text_rows is not None:
            check_text_rows(rows, self.text_rows)

    def _torch_dtype(self, name: str) -> torch.dtype:
        # by name: trt.int64 and trt.bfloat16 exist from 9.0 only; 8.6 binds INT64 as INT32
        mapping = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
                   "INT64": torch.int64, "BOOL": torch.bool, "INT8": torch.int8, "UINT8": torch.uint8}
        name_of = _dtype_name(self.engine.get_tensor_dtype(name))
        if name_of not in mapping:
            raise EngineBuildError(f"engine tensor {name} has type {name_of}, which this backend does not read")
        return mapping[name_of]

    def __call__(self, images: torch.Tensor, text_embeddings: torch.Tensor) -> EngineOutput:
        has_text = "text_embeddings" in self.inputs  # FC-CLIP's engine takes the images only
        if has_text:
            text = text_embeddings.to(self.device, self._dtypes["text_embeddings"]).contiguous()
            self.check_text_rows(int(text.shape[0]))
            if not self.context.set_input_shape("text_embeddings", tuple(text.shape)):  # a new vocabulary size
                raise ValueError(f"TensorRT refused text_embeddings of shape {tuple(text.shape)} (profile {self.text_rows})")

        def run(chunk: torch.Tensor) -> list[torch.Tensor]:
            chunk = chunk.to(self.device, self._dtypes["images"]).contiguous()
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            self.context.set_tensor_address("images", chunk.data_ptr())
            if has_text:
                self.context.set_tensor_address("text_embeddings", text.data_ptr())
            outputs = []
            for name in self.outputs:
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

        return EngineOutput.from_outputs(self.outputs, run_in_batches(run, images, self.batch))
