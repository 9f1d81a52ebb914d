"""One worker step: camera messages -> decode -> predict (preprocess, engine,
postprocess) -> track -> [segments in 3D from the aligned depth] -> output messages, with
per-stage timing. Shared by the ROS node and the offline bag tool. A frame that fails to
decode is dropped with a (throttled) warning; the others go on. Depth that cannot be
used (missing, mismatched, no camera_info) is warned about the same way and the frame's
2D outputs go on."""

from __future__ import annotations

import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ovseg_ros import messages
from ovseg_ros.decode import MAX_PIXELS, decode
from ovseg_ros.depth import DepthError, DepthNoise, Intrinsics, decode_depth, point_cloud
from ovseg_ros.segments_3d import SegmentGeometry, SegmentMeasurer
from ovseg_ros.node.frames import Frame
from ovseg_ros.node.sync import SideInputs, stamp_seconds
from ovseg_ros.predictor import Predictor, StageTimes
from ovseg_ros.preprocess import ImageError
from ovseg_ros.tracking import SegmentTracker, TrackerConfig
from ovseg_ros.visualize import render_overlay

STAGES = ("decode", "preprocess", "engine", "postprocess", "messages")
DEPTH_STAGE = "depth"  # recorded only for frames with depth
OPTIONAL_OUTPUTS = ("overlay", "points", "detections_3d")  # built only while wanted


@dataclass
class CameraOutput:
    camera: str
    panoptic: Any
    semantic: Any
    segments: Any
    detections: Any | None = None
    overlay: Any | None = None  # while wanted
    camera_info: Any | None = None  # the camera's, matched by stamp, with the image's header
    detections_3d: Any | None = None  # frames with depth, while wanted
    points: Any | None = None  # frames with depth, while wanted
    vocabulary_version: int = 0


@dataclass
class PipelineStats:
    """Counters and recent latencies for diagnostics."""

    window: int = 100
    processed: Counter = field(default_factory=Counter)
    bad_input: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    overlays: Counter = field(default_factory=Counter)  # rendered (only while someone subscribes)
    in_3d: Counter = field(default_factory=Counter)  # frames measured in 3D
    without_3d: Counter = field(default_factory=Counter)  # frames whose depth was missing or unusable
    latency: dict = field(default_factory=lambda: defaultdict(lambda: deque(maxlen=100)))
    output_times: dict = field(default_factory=lambda: defaultdict(lambda: deque(maxlen=100)))

    def record(self, stage: str, seconds: float) -> None:
        self.latency[stage].append(seconds)

    def median_ms(self, stage: str) -> float | None:
        values = sorted(self.latency.get(stage, ()))
        return 1e3 * values[len(values) // 2] if values else None

    def output_rate(self, camera: str, now: float) -> float:
        times = [t for t in self.output_times.get(camera, ()) if now - t <= 5.0]
        return len(times) / 5.0


class ThrottledWarnings:
    """At most one message per key per period; the suppressed ones are counted in the next."""

    def __init__(self, emit: Callable[[str], None], period: float = 5.0, clock=time.monotonic) -> None:
        self.emit, self.period, self.clock = emit, period, clock
        self._last: dict[str, float] = {}
        self._suppressed: Counter = Counter()

    def __call__(self, key: str, message: str) -> None:
        now = self.clock()
        if now - self._last.get(key, -1e18) < self.period:
            self._suppressed[key] += 1
            return
        suppressed = self._suppressed.pop(key, 0)
        self._last[key] = now
        self.emit(message + (f" ({suppressed} similar messages suppressed)" if suppressed else ""))


class FramePipeline:
    def __init__(
        self,
        predictor: Predictor,
        factory: messages.MessageFactory,
        warn: Callable[[str], None],
        with_detections: bool = True,
        clock=time.monotonic,
        mask_margin: int = 3,
        depth_threads: int = 2,
        points_decimation: int = 2,
        depth_noise: Mapping[str, DepthNoise] | DepthNoise = DepthNoise(),
        max_pixels: int = MAX_PIXELS,
        tracking: TrackerConfig | None = None,
        publish_embeddings: bool = False,
    ) -> None:
        """tracking: the tracker's settings (one tracker per camera), None: no tracking."""
        self.predictor = predictor
        self.factory = factory
        self.with_detections = with_detections
        self.warnings = ThrottledWarnings(warn, clock=clock)
        self.clock = clock
        self.stats = PipelineStats()
        self.mask_margin, self.points_decimation = mask_margin, points_decimation
        self.depth_threads = depth_threads  # each camera's measurer's bands of rows
        self.depth_noise = depth_noise  # per camera, or one model for all
        self.max_pixels = max_pixels
        self.tracking = tracking
        self.publish_embeddings = publish_embeddings
        self._trackers: dict[str, SegmentTracker] = {}
        self._measurers: dict[str, SegmentMeasurer] = {}  # per camera: each keeps buffers of its image size

    def process(
        self,
        frames: Sequence[Frame],
        wants: Callable[[str, str], bool] = lambda camera, output: False,
        side_inputs: SideInputs | None = None,
    ) -> list[CameraOutput]:
        """wants(camera, output): whether to build an optional output (OPTIONAL_OUTPUTS);
        the node asks whether anyone subscribes to it. The others are always built."""
        start = time.perf_counter()
        images, accepted = [], []
        for frame in frames:
            try:
                images.append(decode(frame.message, self.max_pixels))
                accepted.append(frame)
            except ImageError as exc:
                self.stats.bad_input[frame.camera] += 1
                self.warnings(f"bad:{frame.camera}:{exc.reason}", f"[{frame.camera}] dropped a frame: {exc}")
        if not images:
            return []
        decoded = time.perf_counter()
        times = StageTimes()
        try:
            predictions = self.predictor.predict(images, times=times)
        except Exception as exc:  # e.g. out of memory: drop these frames, keep running
            for frame in accepted:
                self.stats.failed[frame.camera] += 1
            self.warnings("predict", f"inference failed on {len(accepted)} frame(s): {type(exc).__name__}: {exc}")
            return []
        predicted = time.perf_counter()

        outputs, depth_seconds = [], 0.0
        for frame, image, prediction in zip(accepted, images, predictions):
            header = frame.message.header
            track_ids = self._track(frame.camera, header, prediction)
            info = side_inputs.camera_info_for(frame.camera, header) if side_inputs is not None else None
            geometry, cloud = None, None
            if side_inputs is not None and side_inputs.depth:
                started = time.perf_counter()
                geometry, cloud = self._in_3d(frame.camera, header, image, prediction, side_inputs, info, wants(frame.camera, "points"))
                depth_seconds += time.perf_counter() - started
            output = CameraOutput(
                camera=frame.camera,
                panoptic=messages.panoptic_image(self.factory, header, prediction),
                semantic=messages.semantic_image(self.factory, header, prediction),
                segments=messages.segment_array(self.factory, header, prediction, geometry, track_ids, self.publish_embeddings),
                vocabulary_version=prediction.vocabulary_version,
            )
            if self.with_detections:
                output.detections = messages.detection_array(self.factory, header, prediction, track_ids)
                if geometry is not None and wants(frame.camera, "detections_3d"):
                    output.detections_3d = messages.detection3d_array(self.factory, header, prediction, geometry, track_ids)
            if cloud is not None:
                output.points = messages.point_cloud2(self.factory, header, cloud)
            if info is not None:
                output.camera_info = self.factory.with_header(info, header)
            if wants(frame.camera, "overlay"):
                num_classes = len(self.predictor.vocabulary.classes) if self.predictor.vocabulary else 0
                num_classes = max(num_classes, max((s.category + 1 for s in prediction.segments), default=0))
                pixels = render_overlay(image, prediction.panoptic, prediction.segments, num_classes, track_ids=track_ids)
                output.overlay = messages.image(self.factory, header, pixels, "rgb8")
                self.stats.overlays[frame.camera] += 1
            outputs.append(output)
        finished = time.perf_counter()

        self.stats.record("decode", decoded - start)
        for stage in ("preprocess", "engine", "postprocess"):
            if stage in times.values:
                self.stats.record(stage, times.values[stage])
        self.stats.record("messages", finished - predicted - depth_seconds)
        if depth_seconds:
            self.stats.record(DEPTH_STAGE, depth_seconds)
        now = self.clock()
        for output in outputs:
            self.stats.processed[output.camera] += 1
            self.stats.output_times[output.camera].append(now)
        return outputs

    def _track(self, camera: str, header, prediction) -> list[int] | None:
        """Track ids of this frame's segments (the camera's own tracker, on its stamps)."""
        if self.tracking is None:
            return None
        tracker = self._trackers.get(camera)
        if tracker is None:
            tracker = self._trackers[camera] = SegmentTracker(self.tracking)
        return tracker.update(prediction, stamp_seconds(header))

    def _in_3d(self, camera: str, header, image, prediction, side_inputs: SideInputs, info, with_cloud: bool):
        """(geometry, labelled cloud or None) from the depth image matched to this frame;
        (None, None) with a throttled warning when there is none or it cannot be used."""
        slop = side_inputs.slop
        try:
            depth_msg = side_inputs.depth_for(camera, header)
            if depth_msg is None:
                raise DepthError(f"no depth image within sync_slop ({slop} s) of the frame", "depth_missing")
            if info is None:
                raise DepthError(f"depth needs the colour camera's camera_info: none within sync_slop ({slop} s)", "camera_info_missing")
            size = image.shape[:2]
            intrinsics = Intrinsics.from_camera_info(info, size)
            depth = decode_depth(depth_msg, size)
        except DepthError as exc:
            self.stats.without_3d[camera] += 1
            self.warnings(f"depth:{camera}:{exc.reason}", f"[{camera}] no 3D for a frame (2D outputs go on): {exc}")
            return None, None
        measurer = self._measurers.get(camera)
        if measurer is None:
            noise = self.depth_noise if isinstance(self.depth_noise, DepthNoise) else self.depth_noise.get(camera, DepthNoise())
            measurer = SegmentMeasurer(noise=noise, mask_margin=self.mask_margin, threads=self.depth_threads)
            self._measurers[camera] = measurer
        geometry: SegmentGeometry = measurer(prediction.panoptic, depth, intrinsics, len(prediction.segments))
        self.stats.in_3d[camera] += 1
        if not with_cloud:
            return geometry, None
        return geometry, point_cloud(prediction.panoptic, prediction.semantic, image, depth, intrinsics, self.points_decimation)
