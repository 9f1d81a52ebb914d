"""The rclpy shell: a managed (lifecycle) node with parameters, subscriptions,
publishers, services and a worker thread.

All decisions live in the ROS-free modules beside this one (params, frames, pipeline,
sync, vocabulary_service, diagnostics, ovseg_ros.messages); this file only wires them to
rclpy.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
import time

import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from ovseg_msgs.msg import SegmentArray
from ovseg_msgs.srv import GetVocabulary, SetVocabulary
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterUninitializedException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.timer import Timer
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header

from ovseg_ros import messages
from ovseg_ros.checkpoint import describe_model
from ovseg_ros.config import InferenceConfig
from ovseg_ros.node import diagnostics, lifecycle, vocabulary_service
from ovseg_ros.node.cameras import input_names
from ovseg_ros.node.frames import LatestFrameSlots, oversize
from ovseg_ros.node.params import PARAMETERS, SPECS, NodeParameters, ParameterError, QosSpec, check_value
from ovseg_ros.node.pipeline import FramePipeline, ThrottledWarnings
from ovseg_ros.node.sync import SideInputs
from ovseg_ros.predictor import Predictor
from ovseg_ros.segments_3d import compile_3d_step

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


class OvsegNode(LifecycleNode):
    """A managed node (node/lifecycle.py): configure reads the parameters and builds the
    model, activate subscribes and publishes, deactivate stops (and with
    release_on_deactivate frees the model), cleanup and shutdown release everything."""

    def __init__(self) -> None:
        super().__init__("ovseg_node")
        core_log = logging.getLogger("ovseg_ros")
        core_log.addHandler(RosLogHandler(self.get_logger()))
        core_log.setLevel(logging.INFO)
        core_log.propagate = False
        self._declare_parameters()
        self.lifecycle_state = lifecycle.UNCONFIGURED
        self.failure = ""  # why the last transition failed
        self.params: NodeParameters | None = None
        self.predictor: Predictor | None = None
        self.pipeline: FramePipeline | None = None
        self._released_vocabulary: tuple[list[str], list[str], int] | None = None  # classes, things, version while released
        self._inputs: list = []  # subscriptions, while active
        self._outputs: list = []  # publishers and the diagnostics timer, while configured
        self.publishers_by_camera: dict = {}
        self.label_info_pub = self.diagnostics_pub = None
        self.slots = LatestFrameSlots()
        self._running = False
        self._worker: threading.Thread | None = None
        self._mirroring_vocabulary = False  # set while the node itself writes classes/things
        self.factory = messages.RclpyFactory()
        # The vocabulary services share the default group with the parameter and lifecycle
        # services: a service call, a `ros2 param set` of the vocabulary and a transition
        # never run at once.
        self.create_service(SetVocabulary, "~/set_vocabulary", self._on_set_vocabulary)
        self.create_service(GetVocabulary, "~/get_vocabulary", self._on_get_vocabulary)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # -- lifecycle transitions -------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.params = NodeParameters.from_mapping(self._parameter_values())
            self._load_model(list(self.params.classes), self.params.things)
            self._create_outputs()
            if self.params.use_depth:  # here, not on the first depth frame: seconds the first time
                seconds = compile_3d_step()
                self.get_logger().info(f"3D step ready in {seconds:.1f} s (its compiled loops: built on a first start, "
                                       "then loaded from numba's cache)")
        except Exception as exc:  # noqa: BLE001 - any reason refuses the transition, and says why
            self._release(model=True, outputs=True)
            return self._fail("configure", exc)
        self.lifecycle_state = lifecycle.INACTIVE
        model = describe_model(self.predictor.model_config.family, self.predictor.model_config.variant)
        self.get_logger().info(f"configured: {model} on {self.predictor.device}; vocabulary: {'; '.join(self.predictor.vocabulary.as_strings())}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            if self.predictor is None:  # released at deactivate: load it again, with the vocabulary it had
                classes, things, version = self._released_vocabulary
                self._load_model(classes, things)
                self.predictor.continue_versions(version)
                self._released_vocabulary = None
            self._create_inputs()
        except Exception as exc:  # noqa: BLE001
            self._release_inputs()
            return self._fail("activate", exc)
        self.slots = LatestFrameSlots()
        self._running = True
        self._worker = threading.Thread(target=self._work, name="ovseg_worker", daemon=True)
        self._worker.start()
        self.lifecycle_state = lifecycle.ACTIVE
        self._publish_label_info()
        topics = ", ".join(
            f"{inputs[0]} ({camera}{', depth ' + inputs[2] if len(inputs) > 2 else ''})" for camera, inputs in self.input_topics.items()
        )
        model = describe_model(self.predictor.model_config.family, self.predictor.model_config.variant)
        self.get_logger().info(f"segmenting {topics} with {model} on {self.predictor.device}; vocabulary: {'; '.join(self.predictor.vocabulary.as_strings())}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_inputs()
        self.lifecycle_state = lifecycle.INACTIVE
        if self.params.release_on_deactivate:
            state_now = vocabulary_service.get_vocabulary(self.predictor)
            self._released_vocabulary = (list(state_now.classes), list(state_now.things), state_now.version)
            before = gpu_memory_allocated(self.predictor.device)
            device = self.predictor.device
            self._release(model=True, outputs=False)
            after = gpu_memory_allocated(device)
            memory = f"GPU memory allocated {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB" if before is not None else "no GPU in use"
            self.get_logger().info(f"deactivated: model released ({memory}); activate loads it again")
        else:
            self.get_logger().info("deactivated: not segmenting; the model stays loaded")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release(model=True, outputs=True)
        self._released_vocabulary = None
        self.lifecycle_state = lifecycle.UNCONFIGURED
        self.get_logger().info("cleaned up: unconfigured, model and topics released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release_everything()
        self.get_logger().info("shut down: exiting")
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release(model=True, outputs=True)
        self.lifecycle_state = lifecycle.UNCONFIGURED
        return TransitionCallbackReturn.SUCCESS

    def release_everything(self) -> None:
        """Stop the worker, drop subscriptions, publishers and the model (shutdown, exit)."""
        self._release(model=True, outputs=True)
        self.lifecycle_state = lifecycle.FINALIZED

    def _fail(self, transition: str, exc: Exception) -> TransitionCallbackReturn:
        self.failure = str(exc) if isinstance(exc, (ValueError, FileNotFoundError)) else f"{type(exc).__name__}: {exc}"  # ParameterError is one
        self.get_logger().error(f"{transition} refused: {self.failure}")
        return TransitionCallbackReturn.FAILURE

    def _load_model(self, classes, things) -> None:
        p = self.params
        config = InferenceConfig(
            min_size=p.min_size,
            max_size=p.max_size,
            object_mask_threshold=p.object_mask_threshold,
            overlap_threshold=p.overlap_threshold,
            semantic_threshold=p.semantic_threshold,
            early_rejection_topk=p.early_rejection_topk,
        )
        # device, checkpoint and vocabulary are checked before the model is built
        self.predictor = Predictor.from_checkpoint(
            p.checkpoint or None, None if p.variant == "auto" else p.variant, p.device, config,
            stand_in_weights=p.weights == "random",
            backend=p.backend, engine_file=p.engine_file or None, fp16=p.fp16, cuda_graphs=p.cuda_graphs,
            classes=classes, things=things or None, model=None if p.model == "auto" else p.model,
        )
        if p.device == "auto" and self.predictor.device.type == "cpu" and p.backend == "torch":
            self.get_logger().warning("device auto: no CUDA device found, running on the CPU (expect seconds per frame)")
        self.pipeline = FramePipeline(
            self.predictor, self.factory, warn=self.get_logger().warning, with_detections=Detection2DArray is not None,
            mask_margin=p.mask_margin, depth_threads=p.depth_threads, points_decimation=p.points_decimation,
            depth_noise=p.depth_noise_by_camera,
            max_pixels=p.max_image_pixels, tracking=p.tracker_config, publish_embeddings=p.publish_embeddings,
        )
        self._mirror_vocabulary_parameters()

    def _create_outputs(self) -> None:
        p = self.params
        self.cameras = list(p.cameras)
        self.side_inputs = SideInputs(self.cameras, p.sync_slop, depth=p.use_depth)
        self.rates = diagnostics.RateMeter()
        self._frame_id = self.cameras[0]  # replaced by the first image's frame_id
        self._size_warnings = ThrottledWarnings(self.get_logger().warning)
        output_qos = to_qos(p.output_qos)
        for camera in self.cameras:
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
            self._outputs += list(pubs.values())
        if LabelInfo is not None:
            self.label_info_pub = self.create_publisher(LabelInfo, "~/label_info", to_qos(p.label_info_qos))
            self._outputs.append(self.label_info_pub)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # steady time: diagnostics keep coming while a simulation's /clock pauses or jumps back
        timer = self.create_timer(p.diagnostics_period, self._publish_diagnostics, callback_group=MutuallyExclusiveCallbackGroup(),
                                  clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._outputs += [self.diagnostics_pub, timer]

    def _create_inputs(self) -> None:
        p = self.params
        camera_qos = to_qos(p.camera_qos)
        inputs_group = MutuallyExclusiveCallbackGroup()
        image_names, info_names = input_names(self.cameras, "image"), input_names(self.cameras, "camera_info")
        depth_names = input_names(self.cameras, "depth")
        self.input_topics = {}
        for camera in self.cameras:
            image_topic = self.resolve_topic_name(image_names[camera])
            image_type = Image
            if p.compressed:
                image_topic += "/compressed"
                image_type = CompressedImage
            self._inputs.append(self.create_subscription(
                image_type, image_topic, self._size_checked(camera, "frame", lambda msg, c=camera: self.slots.put(c, msg)), camera_qos,
                callback_group=inputs_group))
            info_topic = self.resolve_topic_name(info_names[camera])
            self._inputs.append(self.create_subscription(
                CameraInfo, info_topic, self.side_inputs.camera_info[camera].put, qos_profile_sensor_data, callback_group=inputs_group
            ))
            self.input_topics[camera] = (image_topic, info_topic)
            if p.use_depth:  # no subscription, and no cost, without it
                depth_topic = self.resolve_topic_name(depth_names[camera])
                self._inputs.append(self.create_subscription(
                    Image, depth_topic, self._size_checked(camera, "depth image", self.side_inputs.depth[camera].put), qos_profile_sensor_data,
                    callback_group=inputs_group
                ))
                self.input_topics[camera] += (depth_topic,)

    def _release_inputs(self) -> None:
        """Stop the worker and drop the subscriptions (deactivate)."""
        self._running = False
        self.slots.close()
        if self._worker is not None and self._worker.is_alive() and self._worker is not threading.current_thread():
            self._worker.join(timeout=30.0)
        self._worker = None
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        self._inputs = []

    def _release(self, model: bool, outputs: bool) -> None:
        self._release_inputs()
        if outputs:
            for entity in self._outputs:
                if isinstance(entity, Timer):
                    self.destroy_timer(entity)
                else:
                    self.destroy_publisher(entity)
            self._outputs, self.publishers_by_camera = [], {}
            self.label_info_pub = self.diagnostics_pub = None
        if model and self.predictor is not None:
            device = self.predictor.device
            self.predictor = self.pipeline = None
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()

    # -- frames ------------------------------------------------------------------------

    def _declare_parameters(self) -> None:
        for spec in PARAMETERS:
            descriptor = ParameterDescriptor(description=spec.description)
            constraints = ["one of: " + ", ".join(spec.choices)] if spec.choices else []
            constraints.append("read at configure" if spec.name not in lifecycle.VOCABULARY_PARAMETERS else
                               "set while active (checked like the set_vocabulary service) or unconfigured")
            descriptor.additional_constraints = "; ".join(constraints)
            if spec.minimum is not None and spec.type_name == "float":
                descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.minimum), to_value=float(spec.maximum), step=0.0)]
            elif spec.minimum is not None and spec.type_name == "int":
                descriptor.integer_range = [IntegerRange(from_value=int(spec.minimum), to_value=int(spec.maximum), step=1)]
            default = _PARAMETER_TYPES[spec.type_name] if spec.default is None else spec.default
            self.declare_parameter(spec.name, default, descriptor)

    def _parameter_values(self) -> dict:
        return {spec.name: self._parameter(spec.name) for spec in PARAMETERS}

    def _parameter(self, name: str):
        """A parameter's value; None for one declared by type only and never set."""
        try:
            return self.get_parameter(name).value
        except ParameterUninitializedException:
            return None

    def _size_checked(self, camera: str, what: str, keep):
        """A subscription callback handing messages to `keep`, except oversized ones:
        those are dropped (counted, warned) in the callback, so nothing keeps them alive."""
        def put(msg) -> None:
            reason = oversize(msg, self.params.max_image_pixels)
            if reason is None:
                keep(msg)
                return
            pipeline = self.pipeline
            if pipeline is not None:
                pipeline.stats.bad_input[camera] += 1
            self._size_warnings(f"size:{camera}:{what}", f"[{camera}] dropped a {what}: {reason}")
        return put

    def _work(self) -> None:
        p, pipeline, slots = self.params, self.pipeline, self.slots
        while self._running:
            frames = slots.take(timeout=0.1, max_frames=p.max_batch, max_age=p.max_frame_age)
            if not frames:
                continue
            try:
                outputs = pipeline.process(frames, wants=self._subscribed, side_inputs=self.side_inputs)
                for output in outputs:
                    if not self._running:
                        return  # deactivated while this batch ran: publish nothing more
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
        refusal = lifecycle.vocabulary_refusal(self.lifecycle_state)
        if refusal is not None:
            self.get_logger().warning(f"vocabulary refused: {refusal}")
            response.success, response.message = False, f"vocabulary refused: {refusal}"
            response.vocabulary_version = self.predictor.vocabulary_version if self.predictor is not None else 0
            return response
        reply = self._apply_vocabulary(request.classes, request.things)
        response.success, response.message, response.vocabulary_version = reply.success, reply.message, reply.version
        return response

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        """Settings change while unconfigured (configure reads them); `ros2 param set` of
        classes/things while active goes through the same checked swap as the service:
        classes alone infer things, things alone apply to the current classes."""
        if self._mirroring_vocabulary:
            return SetParametersResult(successful=True)
        changed = {param.name: param.value for param in parameters if param.name in SPECS}
        refusal = lifecycle.parameter_refusal(self.lifecycle_state, changed)
        if refusal is not None:
            return SetParametersResult(successful=False, reason=refusal)
        try:
            for name, value in changed.items():
                check_value(SPECS[name], value)
        except ParameterError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if self.lifecycle_state != lifecycle.ACTIVE or not lifecycle.VOCABULARY_PARAMETERS & changed.keys():
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
        if self.predictor is None:  # unconfigured, or released: what configure or activate will load
            classes, things, version = self._released_vocabulary or (self._parameter("classes"), self._parameter("things") or [], 0)
            response.classes, response.things, response.vocabulary_version = list(classes), list(things), version
            return response
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
        pipeline, publisher = self.pipeline, self.diagnostics_pub
        if publisher is None:
            return
        name, device = f"{self.get_name()}: segmentation", str(self.predictor.device) if self.predictor is not None else ""
        if self.lifecycle_state != lifecycle.ACTIVE or pipeline is None:
            level, message, values = diagnostics.OK, f"{self.lifecycle_state}: not segmenting", {}
        else:
            now = time.monotonic()
            input_rates = self.rates.rates(dict(self.slots.received), now)
            output_rates = {c: pipeline.stats.output_rate(c, now) for c in self.cameras}
            level, message, values = diagnostics.summarize(
                self.cameras, self.slots, pipeline.stats, input_rates, output_rates, self.predictor.vocabulary_version
            )
        values = {"lifecycle_state": self.lifecycle_state, **values}
        publisher.publish(messages.diagnostic_array(self.factory, self._header(), name, level, message, values, device))

    def destroy_node(self) -> None:
        self._release_inputs()
        super().destroy_node()


def gpu_memory_allocated(device: torch.device) -> int | None:
    """Bytes torch has allocated on a CUDA device; None elsewhere."""
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else None


def _interrupt_once(signum, frame) -> None:
    """The first Ctrl-C (or SIGTERM: systemd, docker stop, `timeout`) stops the node.
    Ctrl-C reaches both `ros2 launch` and the node, and launch forwards one more: the
    signals after the first are ignored from the moment it arrives, so none can break the
    clean shutdown halfway."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(args=None) -> None:
    for stop in (signal.SIGINT, signal.SIGTERM):  # before rclpy.init: rclpy's handlers chain to them
        signal.signal(stop, _interrupt_once)
    rclpy.init(args=args)
    node, executor, code = None, None, 0
    try:
        try:
            node = OvsegNode()
            if node.get_parameter("autostart").value:  # what `ros2 run` and the launch file do by default
                for transition, trigger in (("configure", node.trigger_configure), ("activate", node.trigger_activate)):
                    if trigger() != TransitionCallbackReturn.SUCCESS:
                        raise RuntimeError(node.failure or f"{transition} failed")
            else:
                node.get_logger().info("unconfigured (autostart false): waiting for a lifecycle manager or `ros2 lifecycle set`")
        except (KeyboardInterrupt, ExternalShutdownException):
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to start is reported the same way
            rclpy.logging.get_logger("ovseg_node").fatal(f"cannot start: {exc}")
            code = 1
        else:
            executor = MultiThreadedExecutor()
            executor.add_node(node)
            while node.lifecycle_state != lifecycle.FINALIZED:  # the shutdown transition ends the process
                executor.spin_once(timeout_sec=0.5)
            for _ in range(3):  # the shutdown transition's reply
                executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # rclpy's signal handler shuts the context down before ours runs: an executor call
        # in between fails on the dead context (RCLError), which is the same stop
        if rclpy.ok():
            raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # shutting down, however it started
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        if node is not None:
            node.release_everything()
            node.destroy_node()
        rclpy.try_shutdown()
    sys.exit(code)


if __name__ == "__main__":
    main()
