"""Building the node's output messages from a Prediction, ROS-free.

Builders take a MessageFactory, so the same code makes rclpy messages in the node and
rosbags messages for offline bags and tests. Every output reuses the camera image's
header (stamp and frame_id).
"""

from __future__ import annotations

import array
import dataclasses
import importlib
from typing import Any, Protocol, Sequence

import numpy as np

from ovseg_ros.depth import POINT_FIELDS
from ovseg_ros.segments_3d import SegmentGeometry
from ovseg_ros.predictor import Prediction, Segment

SEMANTIC_NONE = 65535  # value of unlabelled pixels in the semantic image


class MessageFactory(Protocol):
    def new(self, type_name: str, **fields: Any) -> Any: ...
    def with_header(self, message: Any, header: Any) -> Any: ...
    def uint8_array(self, values: np.ndarray) -> Any: ...
    def float64_array(self, values: np.ndarray) -> Any: ...
    def float32_array(self, values: np.ndarray) -> Any: ...
    def byte(self, value: int) -> Any: ...


class RosbagsFactory:
    """Messages as rosbags dataclasses (serialisable with typestore.serialize_cdr)."""

    def __init__(self, typestore) -> None:
        self.typestore = typestore

    def new(self, type_name: str, **fields: Any) -> Any:
        return self.typestore.types[type_name](**fields)

    def with_header(self, message: Any, header: Any) -> Any:
        return dataclasses.replace(message, header=header)

    def uint8_array(self, values: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(values).reshape(-1).view(np.uint8)

    def float64_array(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    def float32_array(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float32).reshape(-1)

    def byte(self, value: int) -> int:
        return int(value)


class RclpyFactory:
    """Messages as rclpy classes ("pkg/msg/Name" resolved by importing pkg.msg)."""

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}

    def new(self, type_name: str, **fields: Any) -> Any:
        cls = self._classes.get(type_name)
        if cls is None:
            package, kind, name = type_name.split("/")
            cls = getattr(importlib.import_module(f"{package}.{kind}"), name)
            self._classes[type_name] = cls
        return cls(**fields)

    def with_header(self, message: Any, header: Any) -> Any:
        """A copy of an rclpy message (its fields shared, not duplicated) with another header."""
        fields = {name: getattr(message, name) for name in message.get_fields_and_field_types()}
        fields["header"] = header
        return type(message)(**fields)

    def uint8_array(self, values: np.ndarray) -> array.array:
        out = array.array("B")
        out.frombytes(np.ascontiguousarray(values).reshape(-1).view(np.uint8).data)  # one copy
        return out

    def float64_array(self, values: np.ndarray) -> array.array:
        return array.array("d", np.asarray(values, dtype=np.float64).tolist())

    def float32_array(self, values: np.ndarray) -> array.array:
        out = array.array("f")
        out.frombytes(np.ascontiguousarray(values, dtype=np.float32).reshape(-1).view(np.uint8).data)  # one copy
        return out

    def byte(self, value: int) -> bytes:
        return bytes([value])


def image(factory: MessageFactory, header, pixels: np.ndarray, encoding: str) -> Any:
    """pixels: H x W (mono) or H x W x C, uint8 or uint16 (written little-endian)."""
    pixels = np.ascontiguousarray(pixels)
    if pixels.dtype == np.uint16:
        pixels = pixels.astype("<u2", copy=False)
    height, width = pixels.shape[:2]
    return factory.new(
        "sensor_msgs/msg/Image",
        header=header,
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=pixels.strides[0],
        data=factory.uint8_array(pixels),
    )


def panoptic_image(factory: MessageFactory, header, prediction: Prediction) -> Any:
    """mono16 segment ids (0 = no segment), matching Segment.id."""
    return image(factory, header, prediction.panoptic.astype(np.uint16), "mono16")


def semantic_image(factory: MessageFactory, header, prediction: Prediction) -> Any:
    """mono16 class index into the vocabulary; SEMANTIC_NONE where no class scores
    above the semantic threshold."""
    labels = np.where(prediction.semantic < 0, SEMANTIC_NONE, prediction.semantic).astype(np.uint16)
    return image(factory, header, labels, "mono16")


def segment_array(factory: MessageFactory, header, prediction: Prediction, geometry: SegmentGeometry | None = None,
                  track_ids: Sequence[int] | None = None, with_embeddings: bool = False) -> Any:
    """All segments; with `geometry` (indexed by segment id - 1), their 3D boxes too; with
    `track_ids` (one per segment, in order), their identities across frames; with
    `with_embeddings`, the prediction's embeddings (1 kB+ each: only when asked for)."""
    n = len(prediction.segments)
    tracks = track_ids if track_ids is not None else [0] * n
    none = np.zeros((n, 0), np.float32)
    own = prediction.embeddings if with_embeddings and prediction.embeddings is not None else none
    clip = prediction.clip_embeddings if with_embeddings and prediction.clip_embeddings is not None else none
    return factory.new(
        "ovseg_msgs/msg/SegmentArray",
        header=header,
        vocabulary_version=prediction.vocabulary_version,
        segments=[_segment(factory, s, geometry, t, own[i], clip[i]) for i, (s, t) in enumerate(zip(prediction.segments, tracks))],
    )


def detection_ids(prediction: Prediction, track_ids: Sequence[int] | None) -> list[str]:
    """Detection ids per segment: the track id ("" while unconfirmed) with tracking, else
    the segment id (vision_msgs: the same object keeps its id across messages)."""
    if track_ids is None:
        return [str(s.id) for s in prediction.segments]
    return [str(t) if t else "" for t in track_ids]


def _box_fields(geometry: SegmentGeometry | None, segment_id: int) -> tuple[list[float], list[float], int]:
    if geometry is None or not 0 < segment_id <= len(geometry.points):
        return [float("nan")] * 3, [float("nan")] * 3, 0
    i = segment_id - 1
    return geometry.center[i].tolist(), geometry.size[i].tolist(), int(geometry.points[i])


_NO_EMBEDDING = np.zeros(0, np.float32)


def _segment(factory: MessageFactory, s: Segment, geometry: SegmentGeometry | None = None, track_id: int = 0,
             embedding: np.ndarray = _NO_EMBEDDING, clip_embedding: np.ndarray = _NO_EMBEDDING) -> Any:
    x, y, w, h = s.bbox
    if np.isnan(clip_embedding).any():  # no CLIP view of this mask: sent empty
        clip_embedding = clip_embedding[:0]
    center, size, points = _box_fields(geometry, s.id)
    return factory.new(
        "ovseg_msgs/msg/Segment",
        id=s.id,
        track_id=int(track_id),
        class_index=s.category,
        label=s.label,
        is_thing=s.is_thing,
        score=float(s.score),
        area=s.area,
        bbox=factory.new("sensor_msgs/msg/RegionOfInterest", x_offset=x, y_offset=y, height=h, width=w, do_rectify=False),
        centroid=factory.new("geometry_msgs/msg/Point", x=float(s.centroid[0]), y=float(s.centroid[1]), z=0.0),
        center_3d=factory.new("geometry_msgs/msg/Point", x=center[0], y=center[1], z=center[2]),
        size_3d=factory.new("geometry_msgs/msg/Vector3", x=size[0], y=size[1], z=size[2]),
        depth_points=points,
        embedding=factory.float32_array(embedding),
        clip_embedding=factory.float32_array(clip_embedding),
    )


def detection_array(factory: MessageFactory, header, prediction: Prediction, track_ids: Sequence[int] | None = None) -> Any:
    """vision_msgs/Detection2DArray of the thing segments: id = track id with tracking
    (detection_ids), hypothesis class_id = label, bbox centre and size in pixels."""
    ids = detection_ids(prediction, track_ids)
    detections = [_detection(factory, header, s, i) for s, i in zip(prediction.segments, ids) if s.is_thing and s.area > 0]
    return factory.new("vision_msgs/msg/Detection2DArray", header=header, detections=detections)


def _pose(factory: MessageFactory, position: Sequence[float] = (0.0, 0.0, 0.0)) -> Any:
    return factory.new(
        "geometry_msgs/msg/Pose",
        position=factory.new("geometry_msgs/msg/Point", x=position[0], y=position[1], z=position[2]),
        orientation=factory.new("geometry_msgs/msg/Quaternion", x=0.0, y=0.0, z=0.0, w=1.0),
    )


def _hypothesis(factory: MessageFactory, s: Segment, position: Sequence[float] = (0.0, 0.0, 0.0)) -> Any:
    """class_id = label, score; the pose is the 3D box centre (identity in 2D)."""
    return factory.new(
        "vision_msgs/msg/ObjectHypothesisWithPose",
        hypothesis=factory.new("vision_msgs/msg/ObjectHypothesis", class_id=s.label, score=float(s.score)),
        pose=factory.new("geometry_msgs/msg/PoseWithCovariance", pose=_pose(factory, position),
                         covariance=factory.float64_array(np.zeros(36))),
    )


def _detection(factory: MessageFactory, header, s: Segment, detection_id: str) -> Any:
    x, y, w, h = s.bbox
    hypothesis = _hypothesis(factory, s)
    center = factory.new(
        "vision_msgs/msg/Pose2D",
        position=factory.new("vision_msgs/msg/Point2D", x=x + w / 2.0, y=y + h / 2.0),
        theta=0.0,
    )
    return factory.new(
        "vision_msgs/msg/Detection2D",
        header=header,
        results=[hypothesis],
        bbox=factory.new("vision_msgs/msg/BoundingBox2D", center=center, size_x=float(w), size_y=float(h)),
        id=detection_id,
    )


def detection3d_array(factory: MessageFactory, header, prediction: Prediction, geometry: SegmentGeometry,
                      track_ids: Sequence[int] | None = None) -> Any:
    """vision_msgs/Detection3DArray of the thing segments with valid depth: id and class
    as in 2D, bbox = the segment's axis-aligned 3D box in the camera's optical frame."""
    detections = []
    for s, detection_id in zip(prediction.segments, detection_ids(prediction, track_ids)):
        center, size, points = _box_fields(geometry, s.id)
        if not s.is_thing or points == 0:
            continue
        bbox = factory.new(
            "vision_msgs/msg/BoundingBox3D",
            center=_pose(factory, center),
            size=factory.new("geometry_msgs/msg/Vector3", x=size[0], y=size[1], z=size[2]),
        )
        detections.append(
            factory.new("vision_msgs/msg/Detection3D", header=header, results=[_hypothesis(factory, s, center)], bbox=bbox, id=detection_id)
        )
    return factory.new("vision_msgs/msg/Detection3DArray", header=header, detections=detections)


def point_cloud2(factory: MessageFactory, header, cloud: np.ndarray) -> Any:
    """sensor_msgs/PointCloud2 of a labelled cloud from ovseg_ros.depth.point_cloud: one
    row of points with x, y, z, rgb (float32; rgb packed as PCL does), class_index
    (uint16, 65535 = none) and segment_id (uint32, the panoptic id; 0 = no segment)."""
    fields = [factory.new("sensor_msgs/msg/PointField", name=name, offset=offset, datatype=datatype, count=1)
              for name, offset, datatype, _ in POINT_FIELDS]
    step = cloud.dtype.itemsize
    return factory.new(
        "sensor_msgs/msg/PointCloud2",
        header=header,
        height=1,
        width=len(cloud),
        fields=fields,
        is_bigendian=False,
        point_step=step,
        row_step=step * len(cloud),
        data=factory.uint8_array(cloud.view(np.uint8)),
        is_dense=True,  # points without depth are left out
    )


def label_info(factory: MessageFactory, header, labels: Sequence[str], threshold: float = 0.0) -> Any:
    """vision_msgs/LabelInfo: class index -> label of the active vocabulary."""
    class_map = [factory.new("vision_msgs/msg/VisionClass", class_id=i, class_name=label) for i, label in enumerate(labels)]
    return factory.new("vision_msgs/msg/LabelInfo", header=header, class_map=class_map, threshold=float(threshold))


def diagnostic_array(factory: MessageFactory, header, name: str, level: int, message: str, values: dict[str, str], hardware_id: str = "") -> Any:
    status = factory.new(
        "diagnostic_msgs/msg/DiagnosticStatus",
        level=factory.byte(level),
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[factory.new("diagnostic_msgs/msg/KeyValue", key=k, value=str(v)) for k, v in values.items()],
    )
    return factory.new("diagnostic_msgs/msg/DiagnosticArray", header=header, status=[status])
