"""The rclpy shell: parameters, subscriptions, publishers, services, worker thread.

All decisions live in the ROS-free modules beside this one (params, frames, pipeline,
sync, vocabulary_service, diagnostics, ovseg_ros.messages); this file only wires them to
rclpy.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header

from ovseg_msgs.msg import SegmentArray
from ovseg_msgs.srv import GetVocabulary, SetVocabulary
from ovseg_ros import messages
from ovseg_ros.checkpoint import describe_model
from ovseg_ros.config import InferenceConfig
from ovseg_ros.node import diagnostics, vocabulary_service
from ovseg_ros.node.cameras import input_names
from ovseg_ros.node.frames import LatestFrameSlots
from ovseg_ros.node.params import PARAMETERS, NodeParameters, QosSpec
from ovseg_ros.node.pipeline import FramePipeline
from ovseg_ros.node.sync import SideInputs
from ovseg_ros.predictor import Predictor

try:
    from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo
except ImportError:  # vision_msgs is an exec_depend; without it, detections are not published
    Detection2DArray = Detection3DArray = LabelInfo = None

_PARAMETER_TYPES = {
    "bool": Parameter.Type.BOOL, "int": Parameter.Type.INTEGER, "float": Parameter.Type.DOUBLE,
    "str": Parameter.Type.STRING, "str_list": Parameter.Type.STRING_ARRAY,
}


def to_qos(spec: QosSpec) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=spec.depth,
        reliability=ReliabilityPolicy.BEST_EFFORT if spec.reliability == "best_effort" else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if spec.durability == "transient_local" else DurabilityPolicy.VOLATILE,
    )


class RosLogHandler(logging.Handler):
    """Python logging of the core (checkpoint loading, stand-in weights banner, ...) into
    the node's ROS logger, so it reaches /rosout with the node's name."""

    def __init__(self, logger) -> None:
        super().__init__()
        self.logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        # one call site per severity: rclpy refuses a call site that changes severity
        if record.levelno >= logging.ERROR:
            self.logger.error(message)
        elif record.levelno >= logging.WARNING:
            self.logger.warning(message)
        elif record.levelno >= logging.INFO:
            self.logger.info(message)
        else:
            self.logger.debug(message)


class OvsegNode(Node):
    def __init__(self) -> None:
        super().__init__("ovseg_node")
        log = self.get_logger()
        core_log = logging.getLogger("ovseg_ros")
        core_log.addHandler(RosLogHandler(log))
        core_log.setLevel(logging.INFO)
        core_log.propagate = False
        self.params = NodeParameters.from_mapping(self._declare_parameters())
        p = self.params
        config = InferenceConfig(
            min_size=p.min_size,
            max_size=p.max_size,
            object_mask_threshold=p.object_mask_threshold,
            overlap_threshold=p.overlap_threshold,
            semantic_threshold=p.semantic_threshold,
        )
        # device, checkpoint and vocabulary are checked before the model is built
        self.predictor = Predictor.from_checkpoint(
            p.checkpoint or None, None if p.variant == "auto" else p.variant, p.device, config,
            stand_in_weights=p.weights == "random",
            backend=p.backend, engine_file=p.engine_file or None, fp16=p.fp16, cuda_graphs=p.cuda_graphs,
            classes=list(p.classes), things=p.things, model=None if p.model == "auto" else p.model,
        )
        if p.device == "auto" and self.predictor.device.type == "cpu" and p.backend == "torch":
            log.warning("device auto: no CUDA device found, running on the CPU (expect seconds per frame)")
        self._mirroring_vocabulary = False  # set while the node itself writes classes/things
        self._mirror_vocabulary_parameters()

        self.factory = messages.RclpyFactory()
        self.pipeline = FramePipeline(
            self.predictor, self.factory, warn=log.warning, with_detections=Detection2DArray is not None,
            mask_margin=p.mask_margin, points_decimation=p.points_decimation, depth_noise=p.depth_noise_by_camera,
        )
        self.slots = LatestFrameSlots()
        self.cameras = list(p.cameras)
        self.side_inputs = SideInputs(self.cameras, p.sync_slop, depth=p.use_depth)
        self.rates = diagnostics.RateMeter()
        self._frame_id = self.cameras[0]  # replaced by the first image's frame_id

        camera_qos, output_qos = to_qos(p.camera_qos), to_qos(p.output_qos)
        inputs_group = MutuallyExclusiveCallbackGroup()
        self.publishers_by_camera = {}
        image_names, info_names = input_names(self.cameras, "image"), input_names(self.cameras, "camera_info")
        depth_names = input_names(self.cameras, "depth")
        self.input_topics = {}
        for camera in self.cameras:
            image_topic = self.resolve_topic_name(image_names[camera])
            if p.compressed:
                image_topic += "/compressed"
                self.create_subscription(CompressedImage, image_topic, self._frame_callback(camera), camera_qos, callback_group=inputs_group)
            else:
                self.create_subscription(Image, image_topic, self._frame_callback(camera), camera_qos, callback_group=inputs_group)
            info_topic = self.resolve_topic_name(info_names[camera])
            self.create_subscription(
                CameraInfo, info_topic, self.side_inputs.camera_info[camera].put, qos_profile_sensor_data, callback_group=inputs_group
            )
            self.input_topics[camera] = (image_topic, info_topic)
            if p.use_depth:  # no subscription, and no cost, without it
                depth_topic = self.resolve_topic_name(depth_names[camera])
                self.create_subscription(
                    Image, depth_topic, self.side_inputs.depth[camera].put, qos_profile_sensor_data, callback_group=inputs_group
                )
                self.input_topics[camera] += (depth_topic,)
            pubs = {
                "panoptic": self.create_publisher(Image, f"~/{camera}/panoptic", output_qos),
                "semantic": self.create_publisher(Image, f"~/{camera}/semantic", output_qos),
                "segments": self.create_publisher(SegmentArray, f"~/{camera}/segments", output_qos),
                "camera_info": self.create_publisher(CameraInfo, f"~/{camera}/camera_info", output_qos),
            }
            if Detection2DArray is not None:
                pubs["detections"] = self.create_publisher(Detection2DArray, f"~/{camera}/detections", output_qos)
            if p.publish_overlay:
                pubs["overlay"] = self.create_publisher(Image, f"~/{camera}/overlay", output_qos)
            if p.use_depth:
                pubs["points"] = self.create_publisher(PointCloud2, f"~/{camera}/points", output_qos)
                if Detection3DArray is not None:
                    pubs["detections_3d"] = self.create_publisher(Detection3DArray, f"~/{camera}/detections_3d", output_qos)
            self.publishers_by_camera[camera] = pubs
        self.label_info_pub = (
            self.create_publisher(LabelInfo, "~/label_info", to_qos(p.label_info_qos)) if LabelInfo is not None else None
        )
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        # The vocabulary services share the default group with the parameter services, so
        # a service call and a `ros2 param set` of the vocabulary never run at once.
        self.create_service(SetVocabulary, "~/set_vocabulary", self._on_set_vocabulary)
        self.create_service(GetVocabulary, "~/get_vocabulary", self._on_get_vocabulary)
        # its own group: a vocabulary being encoded must not delay diagnostics
        self.create_timer(p.diagnostics_period, self._publish_diagnostics, callback_group=MutuallyExclusiveCallbackGroup())
        self._publish_label_info()
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._running = True
        self._worker = threading.Thread(target=self._work, name="ovseg_worker", daemon=True)
        self._worker.start()
        topics = ", ".join(
            f"{inputs[0]} ({camera}{', depth ' + inputs[2] if len(inputs) > 2 else ''})" for camera, inputs in self.input_topics.items()
        )
        model = describe_model(self.predictor.model_config.family, self.predictor.model_config.variant)
        log.info(f"segmenting {topics} with {model} on {self.predictor.device}; vocabulary: {'; '.join(self.predictor.vocabulary.as_strings())}")

    def _declare_parameters(self) -> dict:
        values = {}
        for spec in PARAMETERS:
            descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
            if spec.choices:
                descriptor.additional_constraints = "one of: " + ", ".join(spec.choices)
            if spec.minimum is not None and spec.type_name == "float":
                descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.minimum), to_value=float(spec.maximum), step=0.0)]
            elif spec.minimum is not None and spec.type_name == "int":
                descriptor.integer_range = [IntegerRange(from_value=int(spec.minimum), to_value=int(spec.maximum), step=1)]
            default = _PARAMETER_TYPES[spec.type_name] if spec.default is None else spec.default
            values[spec.name] = self.declare_parameter(spec.name, default, descriptor).value
        return values

    def _frame_callback(self, camera: str):
        return lambda msg: self.slots.put(camera, msg)

    def _work(self) -> None:
        p = self.params
        while self._running:
            frames = self.slots.take(timeout=0.1, max_frames=p.max_batch, max_age=p.max_frame_age)
            if not frames:
                continue
            try:
                outputs = self.pipeline.process(frames, wants=self._subscribed, side_inputs=self.side_inputs)
                for output in outputs:
                    self._publish(output)
                self._note_frame_id(frames[-1].message.header.frame_id)
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any one frame
                if not self._running or not rclpy.ok():
                    return  # shutting down: publishers are gone
                self.get_logger().error(f"frame processing failed: {type(exc).__name__}: {exc}")

    def _publish(self, output) -> None:
        pubs = self.publishers_by_camera[output.camera]
        pubs["panoptic"].publish(output.panoptic)
        pubs["semantic"].publish(output.semantic)
        pubs["segments"].publish(output.segments)
        if output.detections is not None and "detections" in pubs:
            pubs["detections"].publish(output.detections)
        if output.overlay is not None:
            pubs["overlay"].publish(output.overlay)
        if output.camera_info is not None:
            pubs["camera_info"].publish(output.camera_info)
        if output.detections_3d is not None:
            pubs["detections_3d"].publish(output.detections_3d)
        if output.points is not None:
            pubs["points"].publish(output.points)

    def _note_frame_id(self, frame_id: str) -> None:
        """label_info and diagnostics carry the cameras' frame; republish label_info once it is known."""
        if frame_id and frame_id != self._frame_id:
            self._frame_id = frame_id
            self._publish_label_info()

    def _subscribed(self, camera: str, output: str) -> bool:
        """The pipeline builds an optional output only while someone subscribes to it."""
        pub = self.publishers_by_camera[camera].get(output)
        return pub is not None and pub.get_subscription_count() > 0

    def _on_set_vocabulary(self, request, response):
        reply = self._apply_vocabulary(request.classes, request.things)
        response.success, response.message, response.vocabulary_version = reply.success, reply.message, reply.version
        return response

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        """`ros2 param set` of classes/things goes through the same checked swap as the
        service: classes alone infer things, things alone apply to the current classes."""
        if self._mirroring_vocabulary:
            return SetParametersResult(successful=True)
        changed = {param.name: param.value for param in parameters}
        if not {"classes", "things"} & changed.keys():
            return SetParametersResult(successful=True)
        classes = changed.get("classes", vocabulary_service.get_vocabulary(self.predictor).classes)
        things = changed.get("things") or None
        reply = self._apply_vocabulary(classes, things, set_by_caller=changed.keys())
        return SetParametersResult(successful=reply.success, reason=reply.message)

    def _apply_vocabulary(self, classes, things, set_by_caller=()) -> vocabulary_service.VocabularyReply:
        """The checked swap behind the service and `ros2 param set`: logged; once active,
        written into the classes/things parameters (but those the caller is setting) and
        announced on label_info."""
        reply = vocabulary_service.set_vocabulary(self.predictor, classes, things)
        if not reply.success:
            self.get_logger().warning(reply.message)
            return reply
        self.get_logger().info(reply.message)
        self._mirror_vocabulary_parameters(skip=set_by_caller)
        self._publish_label_info()
        return reply

    def _mirror_vocabulary_parameters(self, skip=()) -> None:
        """Write the active vocabulary into the classes/things parameters, so that
        `ros2 param get` tells what is active (the parameters being set are `skip`ped:
        rclpy stores those itself once the callback accepts them)."""
        state = vocabulary_service.get_vocabulary(self.predictor)
        values = {"classes": list(state.classes), "things": list(state.things)}
        self._mirroring_vocabulary = True
        try:
            self.set_parameters([Parameter(name, Parameter.Type.STRING_ARRAY, value) for name, value in values.items() if name not in skip])
        finally:
            self._mirroring_vocabulary = False

    def _on_get_vocabulary(self, request, response):
        state = vocabulary_service.get_vocabulary(self.predictor)
        response.classes, response.things, response.vocabulary_version = state.classes, state.things, state.version
        response.seen_in_training = state.seen
        return response

    def _header(self) -> Header:
        return Header(stamp=self.get_clock().now().to_msg(), frame_id=self._frame_id)

    def _publish_label_info(self) -> None:
        if self.label_info_pub is None:
            return
        self.label_info_pub.publish(messages.label_info(self.factory, self._header(), self.predictor.vocabulary.labels))

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        input_rates = self.rates.rates(dict(self.slots.received), now)
        output_rates = {c: self.pipeline.stats.output_rate(c, now) for c in self.cameras}
        level, message, values = diagnostics.summarize(
            self.cameras, self.slots, self.pipeline.stats, input_rates, output_rates, self.predictor.vocabulary_version
        )
        self.diagnostics_pub.publish(
            messages.diagnostic_array(
                self.factory, self._header(), f"{self.get_name()}: segmentation", level, message, values, str(self.predictor.device)
            )
        )

    def destroy_node(self) -> None:
        self._running = False
        self.slots.close()
        if self._worker.is_alive():
            self._worker.join(timeout=10.0)
        super().destroy_node()


def _interrupt_once(signum, frame) -> None:
    """The first Ctrl-C stops the node. Ctrl-C reaches both `ros2 launch` and the node,
    and launch forwards one more: the SIGINTs after the first are ignored from the moment
    it arrives, so none can break the clean shutdown halfway."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(args=None) -> None:
    signal.signal(signal.SIGINT, _interrupt_once)  # before rclpy.init: rclpy's handler chains to it
    rclpy.init(args=args)
    node, executor, code = None, None, 0
    try:
        try:
            node = OvsegNode()
        except (KeyboardInterrupt, ExternalShutdownException):
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to start is reported the same way
            rclpy.logging.get_logger("ovseg_node").fatal(f"cannot start: {exc}")
            code = 1
        else:
            executor = MultiThreadedExecutor()
            executor.add_node(node)
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # shutting down, however it started
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    sys.exit(code)


if __name__ == "__main__":
    main()
