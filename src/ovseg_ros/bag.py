"""Offline: run the node's pipeline over a rosbag2 and write its outputs to a new bag,
without ROS installed (uses `rosbags`). Output topics and types are the node's, so the
result plays back into rviz like a live run.

With depth and camera_info topics, frames are measured in 3D as the node does: each
image waits until the bag has moved `wait` seconds past it, so that a depth image or
camera_info recorded just after it can still be matched (by header stamp, within slop).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ovseg_ros import messages
from ovseg_ros.depth import DepthNoise
from ovseg_ros.interfaces import rosbags_typestore
from ovseg_ros.node.cameras import camera_names, sibling_topic
from ovseg_ros.node.frames import Frame
from ovseg_ros.node.params import NodeParameters, QosSpec
from ovseg_ros.node.pipeline import FramePipeline
from ovseg_ros.tracking import TrackerConfig
from ovseg_ros.node.sync import SideInputs
from ovseg_ros.predictor import Predictor

log = logging.getLogger(__name__)

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
DEPTH_TYPE, CAMERA_INFO_TYPE = "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo"
_NODE_QOS = NodeParameters(weights="random")
OUTPUT_QOS, LABEL_INFO_QOS = _NODE_QOS.output_qos, _NODE_QOS.label_info_qos


def rosbags_qos(spec: QosSpec):
    """A rosbags QoS profile (bag metadata) for the node's QosSpec."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    default = QosTime(sec=0, nsec=0)
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=spec.depth,
        reliability=QosReliability.BEST_EFFORT if spec.reliability == "best_effort" else QosReliability.RELIABLE,
        durability=QosDurability.TRANSIENT_LOCAL if spec.durability == "transient_local" else QosDurability.VOLATILE,
        deadline=default,
        lifespan=default,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=default,
        avoid_ros_namespace_conventions=False,
    )


@dataclass
class BagReport:
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    topics_out: tuple[str, ...] = ()
    detections: bool = False
    frames_in_3d: int = 0


def camera_info_topics(topics: Sequence[str], depth_topics: Sequence[str], info_topics: Sequence[str]) -> list[str]:
    """With depth, one camera_info topic per camera: the given ones, or those beside the images."""
    if not depth_topics:
        return list(info_topics)
    return list(info_topics) or [sibling_topic(topic, "camera_info") for topic in topics]


def check_bag_inputs(
    bag_in: str | Path, bag_out: str | Path, topics: Sequence[str], depth_topics: Sequence[str] = (), info_topics: Sequence[str] = ()
) -> None:
    """Everything about the bags that can be wrong, checked before a model is built:
    the input exists and has the topics with the right types (one depth and camera_info
    topic per camera when depth is used), the output does not exist yet."""
    from rosbags.rosbag2 import Reader

    bag_in, bag_out = Path(bag_in), Path(bag_out)
    if not bag_in.exists():
        raise FileNotFoundError(f"input bag not found: {bag_in}")
    if bag_out.exists():
        raise FileExistsError(f"output bag {bag_out} exists already")
    if depth_topics and len(depth_topics) != len(topics):
        raise ValueError(f"{len(depth_topics)} depth topic(s) for {len(topics)} image topic(s): give one per --topic, in order")
    if info_topics and not depth_topics:
        raise ValueError("--camera-info-topic is used with --depth-topic only (the 3D boxes need the intrinsics)")
    info_topics = camera_info_topics(topics, depth_topics, info_topics)
    if len(info_topics) != len(depth_topics):
        raise ValueError(f"{len(info_topics)} camera_info topic(s) for {len(depth_topics)} depth topic(s): give one per --topic")
    try:
        with Reader(bag_in) as reader:
            available = {c.topic: c.msgtype for c in reader.connections}
    except Exception as exc:  # noqa: BLE001 - rosbags raises its own errors for damaged or foreign folders
        raise ValueError(f"cannot read {bag_in} as a rosbag2: {exc}") from exc
    images = [t for t, msgtype in available.items() if msgtype in IMAGE_TYPES]
    missing = [t for t in [*topics, *depth_topics, *info_topics] if t not in available]
    if missing:
        raise ValueError(f"topic(s) not in the bag: {', '.join(missing)}; image topics there: {', '.join(images) or 'none'}")
    for topic in topics:
        if available[topic] not in IMAGE_TYPES:
            raise ValueError(f"{topic} carries {available[topic]}, not an image type")
    for topic, wanted in [*((t, DEPTH_TYPE) for t in depth_topics), *((t, CAMERA_INFO_TYPE) for t in info_topics)]:
        if available[topic] != wanted:
            raise ValueError(f"{topic} carries {available[topic]}, not {wanted}")


def process_bag(
    predictor: Predictor,
    bag_in: str | Path,
    bag_out: str | Path,
    topics: Sequence[str],
    node_name: str = "ovseg_node",
    overlay: bool = False,
    copy_input: bool = True,
    vision_msgs_dir: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    depth_topics: Sequence[str] = (),
    info_topics: Sequence[str] = (),
    points: bool = False,
    slop: float = 0.02,
    wait: float = 0.5,
    mask_margin: int = 3,
    points_decimation: int = 2,
    depth_noise: DepthNoise = DepthNoise(),
    tracking: TrackerConfig | None = TrackerConfig(),
) -> BagReport:
    from rosbags.rosbag2 import Reader, Writer

    typestore, has_vision = rosbags_typestore(vision_msgs_dir)
    if not has_vision:
        log.warning("vision_msgs definitions not found: detections and label_info are not written "
                    "(source a ROS install, or pass --vision-msgs DIR)")
    factory = messages.RosbagsFactory(typestore)
    check_bag_inputs(bag_in, bag_out, topics, depth_topics, info_topics)
    pipeline = FramePipeline(predictor, factory, warn=log.warning, with_detections=has_vision,
                             mask_margin=mask_margin, points_decimation=points_decimation, depth_noise=depth_noise,
                             tracking=tracking)
    info_topics = camera_info_topics(topics, depth_topics, info_topics)
    cameras = dict(zip(topics, camera_names(topics)))
    side_inputs = SideInputs(cameras.values(), slop, size=64, depth=bool(depth_topics))
    side_topics = {**{t: side_inputs.depth[cameras[i]] for i, t in zip(topics, depth_topics)},
                   **{t: side_inputs.camera_info[cameras[i]] for i, t in zip(topics, info_topics)}}
    optional = {"overlay": overlay, "points": points, "detections_3d": True}  # the pipeline's OPTIONAL_OUTPUTS
    report = BagReport(detections=has_vision)
    bag_out = Path(bag_out)

    with Reader(bag_in) as reader:
        available = {c.topic: c for c in reader.connections}
        wanted = [available[t] for t in [*topics, *side_topics]]

        with Writer(bag_out, version=8) as writer:
            connections = {}

            def connection(topic: str, msgtype: str, qos=OUTPUT_QOS, source=None):
                """Offered QoS as the node offers it (label_info latched), so that `ros2 bag play`
                republishes a topic the way the live node does; input topics keep theirs."""
                if topic not in connections:
                    profiles = source.ext.offered_qos_profiles if source is not None else [rosbags_qos(qos)]
                    connections[topic] = writer.add_connection(topic, msgtype, typestore=typestore, offered_qos_profiles=profiles)
                return connections[topic]

            def write(topic: str, msgtype: str, timestamp: int, msg, qos=OUTPUT_QOS) -> None:
                writer.write(connection(topic, msgtype, qos), timestamp, typestore.serialize_cdr(msg, msgtype))

            label_info_written = False

            def segment(camera: str, timestamp: int, msg) -> None:
                nonlocal label_info_written
                outputs = pipeline.process([Frame(camera, msg, 0.0)], wants=lambda _, output: optional[output], side_inputs=side_inputs)
                if not outputs:
                    report.dropped += 1
                    return
                out = outputs[0]
                base = f"/{node_name}/{camera}"
                write(f"{base}/panoptic", "sensor_msgs/msg/Image", timestamp, out.panoptic)
                write(f"{base}/semantic", "sensor_msgs/msg/Image", timestamp, out.semantic)
                write(f"{base}/segments", "ovseg_msgs/msg/SegmentArray", timestamp, out.segments)
                if out.detections is not None:
                    write(f"{base}/detections", "vision_msgs/msg/Detection2DArray", timestamp, out.detections)
                if out.detections_3d is not None:
                    write(f"{base}/detections_3d", "vision_msgs/msg/Detection3DArray", timestamp, out.detections_3d)
                    report.frames_in_3d += 1
                if out.points is not None:
                    write(f"{base}/points", "sensor_msgs/msg/PointCloud2", timestamp, out.points)
                if out.camera_info is not None:
                    write(f"{base}/camera_info", CAMERA_INFO_TYPE, timestamp, out.camera_info)
                if out.overlay is not None:
                    write(f"{base}/overlay", "sensor_msgs/msg/Image", timestamp, out.overlay)
                if has_vision and not label_info_written:
                    info = messages.label_info(factory, msg.header, predictor.vocabulary.labels)
                    write(f"/{node_name}/label_info", "vision_msgs/msg/LabelInfo", timestamp, info, LABEL_INFO_QOS)
                    label_info_written = True
                report.frames_out += 1
                if progress:
                    progress(1)

            pending: deque[tuple[int, str, object]] = deque()  # images waiting for a later depth/camera_info
            for conn, timestamp, raw in reader.messages(connections=wanted):
                if copy_input:
                    writer.write(connection(conn.topic, conn.msgtype, source=conn), timestamp, raw)
                is_image = conn.topic in cameras
                report.frames_in += is_image
                try:
                    msg = typestore.deserialize_cdr(raw, conn.msgtype)
                except Exception as exc:  # a damaged record: drop it, keep going
                    report.dropped += is_image
                    log.warning("[%s] undecodable message at %d dropped: %s", conn.topic, timestamp, exc)
                    continue
                if is_image:
                    pending.append((timestamp, cameras[conn.topic], msg))
                else:
                    side_topics[conn.topic].put(msg)
                waited = int(wait * 1e9) if side_topics else -1
                while pending and timestamp - pending[0][0] > waited:
                    image_time, camera, image_msg = pending.popleft()
                    segment(camera, image_time, image_msg)
            for timestamp, camera, msg in pending:
                segment(camera, timestamp, msg)
            report.topics_out = tuple(sorted(connections))
    return report
