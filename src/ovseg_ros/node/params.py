"""Node parameters: names, types, defaults, descriptions and ranges in one table,
validated into a dataclass. The rclpy shell declares them from PARAMETERS and reads them
at configure (node/lifecycle.py says when each may change); tests use it directly."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any, Mapping

from ovseg_ros.config import DEFAULT_CLASSES, MODEL_HELP, MODELS
from ovseg_ros.depth import DepthNoise
from ovseg_ros.tracking import TrackerConfig


class ParameterError(ValueError):
    """A parameter value the node cannot start with; the message names the parameter."""


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: Any  # None: not set unless given (declared by type only)
    description: str
    kind: str = ""  # bool | int | float | str | str_list; "" = from the default's type
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    @property
    def type_name(self) -> str:
        if self.kind:
            return self.kind
        return {bool: "bool", int: "int", float: "float", str: "str", list: "str_list"}[type(self.default)]


PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("checkpoint", "", "EOV-Seg, FC-CLIP, SAN or SED checkpoint file (official detectron2 .pth/.pkl or ours)"),
    ParameterSpec("weights", "checkpoint", "'random' runs with stand-in random weights: smoke tests only", choices=("checkpoint", "random")),
    ParameterSpec(
        "model", "auto", f"auto (from the checkpoint; eov_seg with stand-in weights), {MODEL_HELP}", choices=("auto", *MODELS),
    ),
    ParameterSpec(
        "variant", "auto", "auto (from the checkpoint; with stand-in weights EOV-Seg S, FC-CLIP L, SAN B, SED B); EOV-Seg: S (RN50 "
        "CLIP), M (RN50x4), L (ConvNeXt-L); FC-CLIP: R50, L; SAN: B (ViT-B/16), L (ViT-L/14); SED: B (ConvNeXt-B), L",
        choices=("auto", "S", "M", "L", "R50", "B"),
    ),
    ParameterSpec("backend", "torch", "inference backend", choices=("torch", "onnxruntime", "tensorrt")),
    ParameterSpec("engine_file", "", "ONNX from `ovseg export` (onnxruntime, tensorrt) or a built .engine (tensorrt)"),
    ParameterSpec("fp16", False, "half precision: torch autocast on CUDA, or an fp16 TensorRT engine"),
    ParameterSpec("cuda_graphs", False, "torch on CUDA: replay the forward pass as a CUDA graph"),
    ParameterSpec("device", "auto", "torch device: auto (CUDA when available, else CPU with a warning), cpu, cuda, cuda:N"),
    ParameterSpec("min_size", 640, "short side of the network input in pixels (0: keep camera size)", minimum=0, maximum=4096),
    ParameterSpec("max_size", 2560, "cap on the long side of the network input", minimum=32, maximum=8192),
    ParameterSpec(
        "classes", DEFAULT_CLASSES.split("; "), "vocabulary, one class per entry, synonyms comma-separated "
        "(set alone, things are inferred)",
    ),
    ParameterSpec(
        "things", None, "classes that are things (any of their names); unset or empty: classes with a COCO thing name",
        kind="str_list",
    ),
    ParameterSpec("object_mask_threshold", 0.0, "minimum query score to become a segment", minimum=0.0, maximum=1.0),
    ParameterSpec("overlap_threshold", 0.8, "share of its own mask a segment must keep after overlaps", minimum=0.0, maximum=1.0),
    ParameterSpec("semantic_threshold", 0.0, "pixels whose best semantic score is lower get 65535 (none)", minimum=0.0, maximum=100.0),
    ParameterSpec("early_rejection_topk", 0, "SED only (torch backend): category early rejection, 0 off, k keeps after each "
                  "of its first 3 stages the classes in the top k at some pixel (8: SED's fast setting)", minimum=0, maximum=1000),
    ParameterSpec(
        "cameras", ["camera"], "camera names (output topics ~/<camera>/...); one camera reads 'image' and 'camera_info', "
        "several read '<camera>/image' and '<camera>/camera_info' (remap them)",
    ),
    ParameterSpec("compressed", False, "subscribe to <image>/compressed (sensor_msgs/CompressedImage)"),
    ParameterSpec("qos_reliability", "best_effort", "camera subscription reliability", choices=("best_effort", "reliable")),
    ParameterSpec("qos_depth", 1, "camera subscription queue depth (only the newest frame is used)", minimum=1, maximum=100),
    ParameterSpec("sync_slop", 0.02, "seconds a camera_info or depth stamp may differ from its image's", minimum=0.0, maximum=1.0),
    ParameterSpec(
        "use_depth", False, "subscribe to each camera's depth image aligned to it ('depth', or '<camera>/depth' with several "
        "cameras; 16UC1 mm or 32FC1 m) and publish segments in 3D",
    ),
    ParameterSpec("mask_margin", 3, "pixels of each mask's edge that may be wrong; the 3D step keeps those on the "
                  "segment's own surface by depth", minimum=0, maximum=10),
    ParameterSpec(
        "depth_noise", ["realsense_d415"], "depth noise per camera (one entry for all, or one per camera): a preset "
        "(realsense_d415, realsense_d435, realsense_d455) or 'SIGMA_AT_1M,EXPONENT[,QUANTUM]' in metres",
    ),
    ParameterSpec("depth_threads", 2, "threads the 3D step's loops run on, in bands of rows (1: the frame's own thread "
                  "only; the boxes are the same for any number)", minimum=1, maximum=16),
    ParameterSpec("points_decimation", 2, "the labelled point cloud keeps every n-th pixel in each direction", minimum=1, maximum=16),
    ParameterSpec("publish_overlay", True, "publish the rgb8 overlay (rendered only while someone subscribes)"),
    ParameterSpec("max_batch", 4, "largest number of cameras' frames run as one batch", minimum=1, maximum=16),
    ParameterSpec("max_frame_age", 0.0, "drop frames older than this many seconds when their turn comes (0: never)", minimum=0.0, maximum=60.0),
    ParameterSpec("diagnostics_period", 1.0, "seconds between /diagnostics messages (steady time: on in sim time too)",
                  minimum=0.1, maximum=60.0),
    ParameterSpec(
        "max_image_pixels", 50_000_000, "larger camera or depth frames are dropped with a warning before any of their "
        "pixels are copied", minimum=1, maximum=1_000_000_000,
    ),
    ParameterSpec("tracking", True, "give segments identities across frames (Segment.track_id, detection ids, overlay)"),
    ParameterSpec("track_min_hits", 2, "frames a thing is seen in before it gets a track id", minimum=1, maximum=30),
    ParameterSpec("track_max_lost", 1.5, "seconds a track survives unseen (occlusions, dropped frames)", minimum=0.0, maximum=60.0),
    ParameterSpec("track_high_score", 0.5, "segments at or above this score are associated first and start tracks",
                  minimum=0.0, maximum=1.0),
    ParameterSpec("track_low_score", 0.1, "segments below this score are not associated", minimum=0.0, maximum=1.0),
    ParameterSpec("publish_embeddings", False, "Segment.embedding and clip_embedding: each segment's CLIP embeddings "
                  "(1 kB+ per segment), to score new text against without changing the vocabulary"),
    ParameterSpec("autostart", True, "configure and activate at start; false: a lifecycle manager or "
                  "`ros2 lifecycle set` drives the node"),
    ParameterSpec("release_on_deactivate", False, "deactivate frees the model (and its GPU memory); activate loads "
                  "it again (seconds)"),
)
SPECS = {spec.name: spec for spec in PARAMETERS}

_CAMERA_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*$")


@dataclass(frozen=True)
class QosSpec:
    """What the rclpy shell turns into a QoSProfile."""

    reliability: str  # "best_effort" | "reliable"
    depth: int
    durability: str = "volatile"  # "volatile" | "transient_local"


@dataclass(frozen=True)
class NodeParameters:
    checkpoint: str = ""
    weights: str = "checkpoint"
    model: str = "auto"
    variant: str = "auto"
    backend: str = "torch"
    engine_file: str = ""
    fp16: bool = False
    cuda_graphs: bool = False
    device: str = "auto"
    min_size: int = 640
    max_size: int = 2560
    classes: tuple[str, ...] = ()
    things: tuple[str, ...] | None = None  # None: inferred from the classes
    object_mask_threshold: float = 0.0
    overlap_threshold: float = 0.8
    semantic_threshold: float = 0.0
    early_rejection_topk: int = 0
    cameras: tuple[str, ...] = ("camera",)
    compressed: bool = False
    qos_reliability: str = "best_effort"
    qos_depth: int = 1
    sync_slop: float = 0.02
    use_depth: bool = False
    mask_margin: int = 3
    depth_noise: tuple[str, ...] = ("realsense_d415",)
    depth_threads: int = 2
    points_decimation: int = 2
    publish_overlay: bool = True
    max_batch: int = 4
    max_frame_age: float = 0.0
    diagnostics_period: float = 1.0
    max_image_pixels: int = 50_000_000
    tracking: bool = True
    track_min_hits: int = 2
    track_max_lost: float = 1.5
    track_high_score: float = 0.5
    track_low_score: float = 0.1
    publish_embeddings: bool = False
    autostart: bool = True
    release_on_deactivate: bool = False

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "NodeParameters":
        """Validate raw values (missing ones take their defaults); raises ParameterError."""
        unknown = sorted(set(values) - set(SPECS))
        if unknown:
            raise ParameterError(f"unknown parameter(s): {', '.join(unknown)}")
        checked = {}
        for spec in PARAMETERS:
            checked[spec.name] = check_value(spec, values.get(spec.name, spec.default))
        if checked["weights"] == "checkpoint" and not checked["checkpoint"]:
            raise ParameterError(
                "parameter 'checkpoint' is empty: give an EOV-Seg checkpoint path, or set weights:=random "
                "for stand-in random weights (smoke tests only)"
            )
        if checked["weights"] == "random" and checked["checkpoint"]:
            raise ParameterError("give either 'checkpoint' or weights:=random, not both")
        if checked["backend"] != "torch" and not checked["engine_file"]:
            raise ParameterError(f"backend {checked['backend']} needs 'engine_file' (an ONNX from `ovseg export`)")
        if checked["cuda_graphs"] and checked["backend"] != "torch":
            raise ParameterError("cuda_graphs applies to the torch backend only")
        if checked["min_size"] and checked["max_size"] < checked["min_size"]:
            raise ParameterError(f"max_size {checked['max_size']} is smaller than min_size {checked['min_size']}")
        cameras = checked["cameras"]
        if not cameras:
            raise ParameterError("cameras must name at least one camera")
        bad = [c for c in cameras if not _CAMERA_NAME.match(c)]
        if bad:
            raise ParameterError(f"camera name(s) {bad} are not valid topic names (letters, digits, '_', '/' between parts)")
        if len(set(cameras)) != len(cameras):
            raise ParameterError("cameras lists a name twice")
        if checked["track_low_score"] > checked["track_high_score"]:
            raise ParameterError(f"track_low_score {checked['track_low_score']} is above track_high_score {checked['track_high_score']}")
        noise = checked["depth_noise"]
        if len(noise) not in (1, len(cameras)):
            raise ParameterError(f"depth_noise has {len(noise)} entries: give one for all cameras or one per camera ({len(cameras)})")
        for entry in noise:
            try:
                DepthNoise.parse(entry)
            except ValueError as exc:
                raise ParameterError(f"depth_noise: {exc}") from exc
        return cls(**{f.name: checked[f.name] for f in fields(cls) if f.name in checked})

    @property
    def depth_noise_by_camera(self) -> dict[str, DepthNoise]:
        """Each camera's depth noise model (one entry applies to all)."""
        models = [DepthNoise.parse(entry) for entry in self.depth_noise]
        return {camera: models[0 if len(models) == 1 else i] for i, camera in enumerate(self.cameras)}

    @property
    def tracker_config(self) -> TrackerConfig | None:
        """The tracker's settings, None with tracking off."""
        if not self.tracking:
            return None
        return TrackerConfig(high_score=self.track_high_score, low_score=self.track_low_score, min_hits=self.track_min_hits,
                             max_lost_seconds=self.track_max_lost)

    @property
    def camera_qos(self) -> QosSpec:
        """Sensor-data style by default: best effort, newest frame only."""
        return QosSpec(self.qos_reliability, self.qos_depth)

    @property
    def output_qos(self) -> QosSpec:
        """Outputs are reliable (reaches best-effort and reliable subscribers alike)."""
        return QosSpec("reliable", 2)

    @property
    def label_info_qos(self) -> QosSpec:
        """Latched, so late subscribers get the active vocabulary."""
        return QosSpec("reliable", 1, "transient_local")


def check_value(spec: ParameterSpec, value: Any) -> Any:
    """The value, type- and range-checked (lists become tuples); raises ParameterError."""
    kind = spec.type_name
    if value is None:
        if spec.default is None:
            return None
        raise ParameterError(f"parameter {spec.name!r} needs a value")
    if kind == "bool":
        if not isinstance(value, bool):
            raise ParameterError(f"parameter {spec.name!r} must be true or false, got {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParameterError(f"parameter {spec.name!r} must be an integer, got {value!r}")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ParameterError(f"parameter {spec.name!r} must be a finite number, got {value!r}")
        value = float(value)
    elif kind == "str":
        if not isinstance(value, str):
            raise ParameterError(f"parameter {spec.name!r} must be a string, got {value!r}")
        if spec.choices and value not in spec.choices:
            raise ParameterError(f"parameter {spec.name!r} must be one of {', '.join(spec.choices)}, got {value!r}")
        return value
    elif kind == "str_list":
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise ParameterError(f"parameter {spec.name!r} must be a list of strings, got {value!r}")
        return tuple(value)
    if spec.minimum is not None and value < spec.minimum or spec.maximum is not None and value > spec.maximum:
        raise ParameterError(f"parameter {spec.name!r} = {value} is outside [{spec.minimum}, {spec.maximum}]")
    return value
