"""One worker step: camera messages -> decode -> predict (preprocess, engine,
postprocess) -> output messages, with per-stage timing. Shared by the ROS node and the
offline bag tool. A frame that fails to decode is dropped with a (throttled) warning;
the others go on."""

from __future__ import annotations

import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ovseg_ros import messages
from ovseg_ros.decode import decode
from ovseg_ros.node.frames import Frame
from ovseg_ros.node.sync import SideInputs
from ovseg_ros.predictor import Predictor, StageTimes
from ovseg_ros.preprocess import ImageError
from ovseg_ros.visualize import render_overlay

STAGES = ("decode", "preprocess", "engine", "postprocess", "messages")


@dataclass
class CameraOutput:
    camera: str
    panoptic: Any
    semantic: Any
    segments: Any
    detections: Any | None = None
    overlay: Any | None = None
    camera_info: Any | None = None  # the camera's, matched by stamp, with the image's header
    vocabulary_version: int = 0


@dataclass
class PipelineStats:
    """Counters and recent latencies for diagnostics."""

    window: int = 100
    processed: Counter = field(default_factory=Counter)
    bad_input: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    overlays: Counter = field(default_factory=Counter)  # rendered (only while someone subscribes)
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
    ) -> None:
        self.predictor = predictor
        self.factory = factory
        self.with_detections = with_detections
        self.warnings = ThrottledWarnings(warn, clock=clock)
        self.clock = clock
        self.stats = PipelineStats()

    def process(
        self,
        frames: Sequence[Frame],
        wants_overlay: Callable[[str], bool] = lambda camera: False,
        side_inputs: SideInputs | None = None,
    ) -> list[CameraOutput]:
        start = time.perf_counter()
        images, accepted = [], []
        for frame in frames:
            try:
                images.append(decode(frame.message))
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

        outputs = []
        for frame, image, prediction in zip(accepted, images, predictions):
            header = frame.message.header
            output = CameraOutput(
                camera=frame.camera,
                panoptic=messages.panoptic_image(self.factory, header, prediction),
                semantic=messages.semantic_image(self.factory, header, prediction),
                segments=messages.segment_array(self.factory, header, prediction),
                vocabulary_version=prediction.vocabulary_version,
            )
            if self.with_detections:
                output.detections = messages.detection_array(self.factory, header, prediction)
            info = side_inputs.camera_info_for(frame.camera, header) if side_inputs is not None else None
            if info is not None:
                output.camera_info = self.factory.with_header(info, header)
            if wants_overlay(frame.camera):
                num_classes = len(self.predictor.vocabulary.classes) if self.predictor.vocabulary else 0
                num_classes = max(num_classes, max((s.category + 1 for s in prediction.segments), default=0))
                pixels = render_overlay(image, prediction.panoptic, prediction.segments, num_classes)
                output.overlay = messages.image(self.factory, header, pixels, "rgb8")
                self.stats.overlays[frame.camera] += 1
            outputs.append(output)
        finished = time.perf_counter()

        self.stats.record("decode", decoded - start)
        for stage in ("preprocess", "engine", "postprocess"):
            if stage in times.values:
                self.stats.record(stage, times.values[stage])
        self.stats.record("messages", finished - predicted)
        now = self.clock()
        for output in outputs:
            self.stats.processed[output.camera] += 1
            self.stats.output_times[output.camera].append(now)
        return outputs
