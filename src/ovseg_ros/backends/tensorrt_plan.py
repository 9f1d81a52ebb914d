"""How to build an engine on a given TensorRT: pure decisions, tested without TensorRT.

TensorRT version in, flags and precision constraints out. Sources (NVIDIA/TensorRT
include/NvInfer.h and CHANGELOG.md on release/8.6 a0215c1a, 10.3 5b990f0a, 10.16
d0faf303, 11.0 93842ac9; onnx-tensorrt 8.6-GA ee0b139b):
- 8.6 (JetPack 6.0): the ONNX parser asserts an explicit-batch network (ModelImporter.cpp
  531), so the network needs EXPLICIT_BATCH; there is no STRONGLY_TYPED (9.0) and no
  trt.int64 / trt.bfloat16 (9.0). InstanceNormalization goes through a plugin unless the
  parser flag NATIVE_INSTANCENORM is set (builtin_op_importers.cpp 2205-2216).
- 10.0-10.11 (JetPack 6.1/6.2 ship 10.3): explicit batch always (the flag is ignored);
  fp16 by BuilderFlag.FP16, with OBEY_PRECISION_CONSTRAINTS and per-layer precision for
  the layers that must stay fp32 ("build fails" when no implementation meets them).
- 10.12: FP16, OBEY and per-layer precision are deprecated ("superseded by strong
  typing"): build strongly typed from a mixed-precision ONNX instead.
- 11.0: they are gone and every network is strongly typed (STRONGLY_TYPED is kept,
  ignored); EXPLICIT_BATCH no longer exists.
- Shape layers' outputs "must be kINT32" (NvInfer.h 719-722): no precision constraint
  ever goes on a layer that is not float in and float out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

MIN_VERSION = (8, 6)
STRONGLY_TYPED_FROM = (10, 12)  # where the weak-typing precision controls become deprecated


class UnsupportedTensorRT(RuntimeError):
    """A TensorRT version this project's engines cannot be built with."""


def parse_version(text: str) -> tuple[int, int, int]:
    numbers = [int(n) for n in re.findall(r"\d+", text)[:3]]
    if not numbers:
        raise ValueError(f"not a TensorRT version: {text!r}")
    return tuple((numbers + [0, 0])[:3])  # type: ignore[return-value]


def check_version(version: tuple[int, ...]) -> None:
    if tuple(version[:2]) < MIN_VERSION:
        raise UnsupportedTensorRT(
            f"TensorRT {'.'.join(map(str, version))} is older than 8.6, the oldest this project builds with "
            "(JetPack 6.0 ships 8.6.2; JetPack 5 ships 8.5, whose ONNX parser lacks what the export needs): "
            "upgrade to JetPack 6 / TensorRT >= 8.6, or use backend onnxruntime or torch"
        )


@dataclass(frozen=True)
class BuildPlan:
    """What build_engine does on one TensorRT version for one requested precision."""

    version: tuple[int, int, int]
    precision: str  # what the engine really computes in: "fp16" (mixed, fp32 set kept) or "fp32"
    explicit_batch_flag: bool  # network flag EXPLICIT_BATCH (8.x, 9.x)
    strongly_typed_flag: bool  # network flag STRONGLY_TYPED (10.12-10.x; implied in 11)
    fp16_flag: bool  # BuilderFlag.FP16 (weak typing)
    obey_precision_constraints: bool  # BuilderFlag.OBEY_PRECISION_CONSTRAINTS with per-layer fp32
    mixed_precision_onnx: bool  # parse the fp16/fp32 mixed file, not the fp32 one
    native_instancenorm: bool  # OnnxParserFlag.NATIVE_INSTANCENORM: no plugin for it (8.x)

    @property
    def strongly_typed(self) -> bool:
        return self.strongly_typed_flag or self.version[0] >= 11


def build_plan(version: tuple[int, ...], precision: str) -> BuildPlan:
    if precision not in ("fp16", "fp32"):
        raise ValueError(f"precision must be fp16 or fp32, got {precision!r}")
    check_version(version)
    version = tuple((list(version) + [0, 0, 0])[:3])
    major_minor = version[:2]
    strongly_typed = major_minor >= STRONGLY_TYPED_FROM
    fp16 = precision == "fp16"
    return BuildPlan(
        version=version,  # type: ignore[arg-type]
        precision=precision,
        explicit_batch_flag=version[0] < 10,
        strongly_typed_flag=strongly_typed and version[0] < 11,
        fp16_flag=fp16 and not strongly_typed,
        obey_precision_constraints=fp16 and not strongly_typed,
        mixed_precision_onnx=fp16 and strongly_typed,
        native_instancenorm=version[0] < 10,
    )


# TensorRT LayerType names (trt.LayerType.X.name) that never take a precision
# constraint: they compute shapes, hold constants, convert or move values
UNCONSTRAINED_LAYER_TYPES = frozenset({
    "SHAPE", "CONSTANT", "CAST", "IDENTITY", "SHUFFLE", "GATHER", "SLICE", "CONCATENATION", "FILL", "ASSERTION",
    "CONDITION", "CONDITIONAL_INPUT", "CONDITIONAL_OUTPUT", "SCATTER", "SELECT", "NON_ZERO", "ONE_HOT", "TOPK",
    "PADDING", "RESIZE", "SQUEEZE", "UNSQUEEZE",
})
FLOAT_TENSOR_TYPES = frozenset({"FLOAT", "HALF"})
_METADATA_NODE = re.compile(r"\[ONNX Layer: ([^|\]]+)")
_SUFFIX = re.compile(r"_\d+$")


def onnx_node_of(layer_name: str, layer_metadata: str | None, known_nodes: Iterable[str]) -> str | None:
    """The ONNX node a parsed layer came from: the parser's metadata "[ONNX Layer: name|...]"
    (onnx2trt_utils.cpp 2268-2283), else the layer's name, which is the node's name for its
    first layer and the name plus "_<counter>" for the others (ImporterContext.cpp 112-144)."""
    known = set(known_nodes)
    if layer_metadata:
        match = _METADATA_NODE.search(layer_metadata)
        if match and match.group(1).strip() in known:
            return match.group(1).strip()
    if layer_name in known:
        return layer_name
    stripped = _SUFFIX.sub("", layer_name)
    return stripped if stripped in known else None


def keep_layer_fp32(
    layer_type: str,
    input_types: Sequence[str | None],
    output_types: Sequence[str],
    outputs_are_shape_tensors: bool,
    onnx_node: str | None,
    fp32_nodes: Iterable[str],
) -> bool:
    """Whether a weakly typed fp16 build constrains this layer to fp32: only layers of the
    measured fp32 set, and only when they compute on floats (inputs and outputs), never
    shape, constant, cast, integer or bool layers (a constraint there fails the build)."""
    if onnx_node is None or onnx_node not in set(fp32_nodes):
        return False
    if layer_type in UNCONSTRAINED_LAYER_TYPES or outputs_are_shape_tensors:
        return False
    present = [t for t in input_types if t is not None]
    return bool(present) and all(t in FLOAT_TENSOR_TYPES for t in present) and all(t in FLOAT_TENSOR_TYPES for t in output_types)


def check_text_rows(rows: int, profile: tuple[int, int, int]) -> None:
    """A vocabulary's text rows against the engine's optimisation profile (min, opt, max)."""
    low, _, high = profile
    if not low <= rows <= high:
        raise ValueError(
            f"the vocabulary needs {rows} text rows (one per class and synonym), but this TensorRT engine was built "
            f"for {low} to {high}: use fewer classes or synonyms, or rebuild the engine with a larger --max-rows (ovseg build-engine)"
        )


def timing_cache_name(trt_version: str, gpu: str) -> str:
    """Timing caches are only valid for the exact TensorRT version (ITimingCache::combine
    refuses others) and device (set_timing_cache reports a mismatch): one file each."""
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{trt_version}-{gpu}").strip("-")
    return f"timing-{slug}.cache"
