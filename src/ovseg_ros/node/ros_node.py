"""The rclpy shell: parameters, subscriptions, publishers, services, worker thread.

All decisions live in the ROS-free modules beside this one (params, frames, pipeline,
vocabulary_service, diagnostics, ovseg_ros.messages); this file only wires them to rclpy.
"""

from __future__ import annotations

import sys
import threading
import time

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from ovseg_msgs.msg import SegmentArray
from ovseg_msgs.srv import GetVocabulary, SetVocabulary
from ovseg_ros import messages
from ovseg_ros.config import InferenceConfig
from ovseg_ros.node import diagnostics, vocabulary_service
from ovseg_ros.node.cameras import camera_names
from ovseg_ros.node.frames import LatestFrameSlots
from ovseg_ros.node.params import PARAMETERS, NodeParameters, ParameterError, QosSpec
from ovseg_ros.node.pipeline import FramePipeline
from ovseg_ros.predictor import STAND_IN_BANNER, MissingWeightsError, Predictor

try:
    from vision_msgs.msg import Detection2DArray, LabelInfo
except ImportError:  # vision_msgs is an exec_depend; without it, detections are not published
    Detection2DArray = LabelInfo = None

from diagnostic_msgs.msg import DiagnosticArray


def to_qos(spec: QosSpec) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=spec.depth,
        reliability=ReliabilityPolicy.BEST_EFFORT if spec.reliability == "best_effort" else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if spec.durability == "transient_local" else DurabilityPolicy.VOLATILE,
    )


class OvsegNode(Node):
    def __init__(self) -> None:
        super().__init__("ovseg_node")
        self.params = NodeParameters.from_mapping(self._declare_parameters())
        p = self.params
        config = InferenceConfig(
            min_size=p.min_size,
            max_size=p.max_size,
            object_mask_threshold=p.object_mask_threshold,
            overlap_threshold=p.overlap_threshold,
            semantic_threshold=p.semantic_threshold,
        )
        self.predictor = Predictor.from_checkpoint(
            p.checkpoint or None, p.variant, p.device, config, stand_in_weights=p.weights == "random",
            backend=p.backend, engine_file=p.engine_file or None, fp16=p.fp16, cuda_graphs=p.cuda_graphs,
        )
        if p.weights == "random":
            self.get_logger().warning(STAND_IN_BANNER)
        self.predictor.set_vocabulary(list(p.classes), list(p.things))
        self.factory = messages.RclpyFactory()
        self.pipeline = FramePipeline(
            self.predictor, self.factory, warn=self.get_logger().warning, with_detections=Detection2DArray is not None
        )
        self.slots = LatestFrameSlots()
        self.cameras = camera_names(p.image_topics)
        self.rates = diagnostics.RateMeter()

        camera_qos, output_qos = to_qos(p.camera_qos), to_qos(p.output_qos)
        frames_group = MutuallyExclusiveCallbackGroup()
        self.publishers_by_camera = {}
        for topic, camera in zip(p.image_topics, self.cameras):
            if p.compressed:
                self.create_subscription(
                    CompressedImage, topic.rstrip("/") + "/compressed",
                    lambda msg, c=camera: self.slots.put(c, msg), camera_qos, callback_group=frames_group,
                )
            else:
                self.create_subscription(Image, topic, lambda msg, c=camera: self.slots.put(c, msg), camera_qos, callback_group=frames_group)
            pubs = {
                "panoptic": self.create_publisher(Image, f"~/{camera}/panoptic", output_qos),
                "semantic": self.create_publisher(Image, f"~/{camera}/semantic", output_qos),
                "segments": self.create_publisher(SegmentArray, f"~/{camera}/segments", output_qos),
            }
            if Detection2DArray is not None:
                pubs["detections"] = self.create_publisher(Detection2DArray, f"~/{camera}/detections", output_qos)
            if p.publish_overlay:
                pubs["overlay"] = self.create_publisher(Image, f"~/{camera}/overlay", output_qos)
            self.publishers_by_camera[camera] = pubs
        self.label_info_pub = (
            self.create_publisher(LabelInfo, "~/label_info", to_qos(p.label_info_qos)) if LabelInfo is not None else None
        )
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        services_group = MutuallyExclusiveCallbackGroup()
        self.create_service(SetVocabulary, "~/set_vocabulary", self._on_set_vocabulary, callback_group=services_group)
        self.create_service(GetVocabulary, "~/get_vocabulary", self._on_get_vocabulary, callback_group=services_group)
        # its own group: a vocabulary being encoded in the service must not delay diagnostics
        self.create_timer(p.diagnostics_period, self._publish_diagnostics, callback_group=MutuallyExclusiveCallbackGroup())
        self._publish_label_info()
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._running = True
        self._worker = threading.Thread(target=self._work, name="ovseg_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"segmenting {', '.join(p.image_topics)} on {p.device}; vocabulary: {'; '.join(self.predictor.vocabulary.as_strings())}"
        )

    def _declare_parameters(self) -> dict:
        values = {}
        for spec in PARAMETERS:
            descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
            if spec.choices:
                descriptor.additional_constraints = "one of: " + ", ".join(spec.choices)
            if spec.minimum is not None and isinstance(spec.default, float):
                descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.minimum), to_value=float(spec.maximum), step=0.0)]
            elif spec.minimum is not None and isinstance(spec.default, int) and not isinstance(spec.default, bool):
                descriptor.integer_range = [IntegerRange(from_value=int(spec.minimum), to_value=int(spec.maximum), step=1)]
            values[spec.name] = self.declare_parameter(spec.name, spec.default, descriptor).value
        return values

    def _work(self) -> None:
        p = self.params
        while self._running and rclpy.ok():
            frames = self.slots.take(timeout=0.1, max_frames=p.max_batch, max_age=p.max_frame_age)
            if not frames:
                continue
            outputs = self.pipeline.process(frames, wants_overlay=self._wants_overlay)
            for output in outputs:
                pubs = self.publishers_by_camera[output.camera]
                pubs["panoptic"].publish(output.panoptic)
                pubs["semantic"].publish(output.semantic)
                pubs["segments"].publish(output.segments)
                if output.detections is not None and "detections" in pubs:
                    pubs["detections"].publish(output.detections)
                if output.overlay is not None:
                    pubs["overlay"].publish(output.overlay)

    def _wants_overlay(self, camera: str) -> bool:
        pub = self.publishers_by_camera[camera].get("overlay")
        return pub is not None and pub.get_subscription_count() > 0

    def _on_set_vocabulary(self, request, response):
        reply = vocabulary_service.set_vocabulary(self.predictor, request.classes, request.things)
        response.success, response.message, response.vocabulary_version = reply.success, reply.message, reply.version
        (self.get_logger().info if reply.success else self.get_logger().warning)(reply.message)
        if reply.success:
            self._publish_label_info()
        return response

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        """`ros2 param set ... classes/things` goes through the same checked swap as the service."""
        changed = {param.name: param.value for param in parameters}
        if not {"classes", "things"} & changed.keys():
            return SetParametersResult(successful=True)
        current_classes, current_things, _ = vocabulary_service.get_vocabulary(self.predictor)
        classes = changed.get("classes", current_classes)
        things = changed.get("things", current_things)
        reply = vocabulary_service.set_vocabulary(self.predictor, classes, things)
        if reply.success:
            self._publish_label_info()
        return SetParametersResult(successful=reply.success, reason=reply.message)

    def _on_get_vocabulary(self, request, response):
        response.classes, response.things, response.vocabulary_version = vocabulary_service.get_vocabulary(self.predictor)
        return response

    def _publish_label_info(self) -> None:
        if self.label_info_pub is None:
            return
        header = messages_header(self)
        self.label_info_pub.publish(messages.label_info(self.factory, header, self.predictor.vocabulary.labels))

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        input_rates = self.rates.rates(dict(self.slots.received), now)
        output_rates = {c: self.pipeline.stats.output_rate(c, now) for c in self.cameras}
        level, message, values = diagnostics.summarize(
            self.cameras, self.slots, self.pipeline.stats, input_rates, output_rates, self.predictor.vocabulary_version
        )
        header = messages_header(self)
        self.diagnostics_pub.publish(
            messages.diagnostic_array(self.factory, header, f"{self.get_name()}: segmentation", level, message, values, self.params.device)
        )

    def destroy_node(self) -> None:
        self._running = False
        self.slots.close()
        if self._worker.is_alive():
            self._worker.join(timeout=5.0)
        super().destroy_node()


def messages_header(node: Node):
    from std_msgs.msg import Header

    return Header(stamp=node.get_clock().now().to_msg(), frame_id="")


def main(args=None) -> None:
    rclpy.init(args=args)
    node = None
    try:
        node = OvsegNode()
        executor = MultiThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ParameterError, MissingWeightsError, FileNotFoundError, NotImplementedError, ValueError, ImportError) as exc:
        rclpy.logging.get_logger("ovseg_node").fatal(f"cannot start: {exc}")
        sys.exit(1)
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
