"""The node's ROS-free logic: parameters, QoS, camera names, frame slots, vocabulary
service, pipeline and diagnostics."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from support import make_camera_info, make_header
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ovseg_ros import messages
from ovseg_ros.node import diagnostics, vocabulary_service
from ovseg_ros.node.cameras import camera_names, input_names, sibling_topic
from ovseg_ros.node.frames import Frame, LatestFrameSlots
from ovseg_ros.node.params import PARAMETERS, NodeParameters, ParameterError
from ovseg_ros.node.pipeline import FramePipeline, ThrottledWarnings
from ovseg_ros.node.sync import SideInputs


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- parameters -------------------------------------------------------------------------


def test_defaults_need_a_checkpoint_or_random_weights():
    with pytest.raises(ParameterError, match="checkpoint"):
        NodeParameters.from_mapping({})
    params = NodeParameters.from_mapping({"weights": "random"})
    assert params.cameras == ("camera",) and params.classes and params.things is None and params.device == "auto"


@pytest.mark.parametrize(
    "values, reason",
    [
        ({"weights": "random", "min_size": -1}, "outside"),
        ({"weights": "random", "min_size": "640"}, "integer"),
        ({"weights": "random", "overlap_threshold": 1.5}, "outside"),
        ({"weights": "random", "overlap_threshold": float("nan")}, "finite"),
        ({"weights": "random", "qos_reliability": "sometimes"}, "one of"),
        ({"weights": "random", "cameras": []}, "at least one"),
        ({"weights": "random", "cameras": ["a", "a"]}, "twice"),
        ({"weights": "random", "cameras": ["/front/image_raw"]}, "not valid topic names"),
        ({"weights": "random", "things": "person"}, "list of strings"),
        ({"weights": "random", "variant": "XL"}, "one of"),
        ({"weights": "random", "compressed": "yes"}, "true or false"),
        ({"weights": "random", "classes": "person"}, "list of strings"),
        ({"weights": "random", "checkpoint": "x.pth"}, "not both"),
        ({"weights": "random", "min_size": 800, "max_size": 640}, "smaller"),
        ({"weights": "random", "colour": 3}, "unknown"),
        ({"weights": "random", "backend": "tensorrt"}, "engine_file"),
        ({"weights": "random", "backend": "onnxruntime", "engine_file": "m.onnx", "cuda_graphs": True}, "torch backend only"),
    ],
)
def test_bad_parameters_are_named(values, reason):
    with pytest.raises(ParameterError, match=reason):
        NodeParameters.from_mapping(values)


def test_every_parameter_has_a_description_and_a_field():
    names = {f for f in NodeParameters.__dataclass_fields__}
    for spec in PARAMETERS:
        assert spec.description and spec.name in names


def test_qos_choices():
    params = NodeParameters.from_mapping({"weights": "random"})
    assert (params.camera_qos.reliability, params.camera_qos.depth) == ("best_effort", 1)
    assert params.label_info_qos.durability == "transient_local"
    assert params.output_qos.reliability == "reliable"
    reliable = NodeParameters.from_mapping({"weights": "random", "qos_reliability": "reliable", "qos_depth": 3})
    assert (reliable.camera_qos.reliability, reliable.camera_qos.depth) == ("reliable", 3)


def test_camera_names():
    assert camera_names(["/front/image_raw", "/robot/left/image_rect", "/image_raw", "/front/image"]) == [
        "front", "robot/left", "camera", "front_2",
    ]


def test_input_names_follow_image_pipeline_conventions():
    assert input_names(["front"], "image") == {"front": "image"}
    assert input_names(["front", "rear"], "camera_info") == {"front": "front/camera_info", "rear": "rear/camera_info"}
    assert sibling_topic("/front/image_raw", "camera_info") == "/front/camera_info"
    assert sibling_topic("/robot/left/image_rect", "depth") == "/robot/left/depth"


def test_side_inputs_match_by_stamp_within_slop(typestore):
    side = SideInputs(["front"], slop=0.02)
    for sec, nanosec in ((10, 0), (10, 100_000_000), (11, 0)):
        side.camera_info["front"].put(make_camera_info(typestore, make_header(typestore, sec, nanosec), 4, 5))
    assert side.camera_info_for("front", make_header(typestore, 10, 110_000_000)).header.stamp.nanosec == 100_000_000
    assert side.camera_info_for("front", make_header(typestore, 10, 500_000_000)) is None  # nearest is 0.4 s away
    assert side.camera_info_for("rear", make_header(typestore, 10, 0)) is None


# --- frame slots ------------------------------------------------------------------------


def test_slots_keep_only_the_newest_frame_per_camera():
    clock = FakeClock()
    slots = LatestFrameSlots(clock)
    for i in range(5):
        slots.put("front", i)
        clock.now += 0.01
    slots.put("rear", "r")
    frames = slots.take(timeout=0)
    assert [(f.camera, f.message) for f in frames] == [("front", 4), ("rear", "r")]
    assert slots.replaced["front"] == 4 and slots.received["front"] == 5
    assert slots.take(timeout=0) == []


def test_slots_batch_limit_and_max_age():
    clock = FakeClock()
    slots = LatestFrameSlots(clock)
    slots.put("a", 1)
    clock.now += 1.0
    slots.put("b", 2)
    slots.put("c", 3)
    assert [f.camera for f in slots.take(timeout=0, max_frames=2, max_age=0.5)] == ["b"]  # a expired
    assert slots.expired["a"] == 1
    assert [f.camera for f in slots.take(timeout=0)] == ["c"]


def test_slots_wake_the_worker_and_close():
    slots = LatestFrameSlots()
    got = []
    worker = threading.Thread(target=lambda: got.extend(slots.take(timeout=5)))
    worker.start()
    slots.put("front", "frame")
    worker.join(2)
    assert [f.message for f in got] == ["frame"]
    slots.close()
    assert slots.take(timeout=5) == []


# --- vocabulary service -------------------------------------------------------------------


def test_set_vocabulary_swaps_and_versions(tiny_predictor):
    before = tiny_predictor.vocabulary_version
    reply = vocabulary_service.set_vocabulary(tiny_predictor, ["person", "car, automobile"], ["car"])
    assert reply.success and reply.version == before + 1
    classes, things, version, seen = vocabulary_service.get_vocabulary(tiny_predictor)
    assert classes == ["person", "car, automobile"] and things == ["car"] and version == reply.version
    assert seen == [True, True]


def test_empty_things_are_inferred_and_the_reply_says_which(tiny_predictor):
    reply = vocabulary_service.set_vocabulary(tiny_predictor, ["person", "forklift", "dog", "floor"], [])
    assert reply.success and "things (inferred): person, dog" in reply.message
    assert vocabulary_service.get_vocabulary(tiny_predictor).things == ["person", "dog"]


def test_bad_request_keeps_the_old_vocabulary(tiny_predictor):
    old = vocabulary_service.get_vocabulary(tiny_predictor)
    for classes, things in ([[], []], [["a", "A"], []], [["a"], ["b"]], [[" "], []], [["x; y"], []]):
        reply = vocabulary_service.set_vocabulary(tiny_predictor, classes, things)
        assert not reply.success and reply.message and reply.version == old.version
    assert vocabulary_service.get_vocabulary(tiny_predictor) == old


names = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(classes=st.lists(names, max_size=5), things=st.lists(names, max_size=3))
def test_fuzz_vocabulary_requests(tiny_predictor, classes, things):
    before = vocabulary_service.get_vocabulary(tiny_predictor)
    reply = vocabulary_service.set_vocabulary(tiny_predictor, classes, things)
    assert reply.message
    if reply.success:
        assert reply.version == before[2] + 1
    else:
        assert vocabulary_service.get_vocabulary(tiny_predictor) == before


def test_frames_never_mix_vocabularies(tiny_predictor, typestore):
    """Every output carries the version it was made with, and its labels belong to it."""
    factory = messages.RosbagsFactory(typestore)
    pipeline = FramePipeline(tiny_predictor, factory, warn=lambda m: None)
    image = rgb_message(typestore, np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8))
    vocabularies = {}
    stop = threading.Event()

    def swap():
        i = 0
        while not stop.is_set():
            reply = vocabulary_service.set_vocabulary(tiny_predictor, [f"thing{i}", f"stuff{i}"], [f"thing{i}"])
            vocabularies[reply.version] = {f"thing{i}", f"stuff{i}"}
            i += 1

    vocabularies[tiny_predictor.vocabulary_version] = set(tiny_predictor.vocabulary.labels)
    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        for _ in range(15):
            (out,) = pipeline.process([Frame("front", image, 0.0)])
            labels = {s.label for s in out.segments.segments}
            assert labels <= vocabularies[out.segments.vocabulary_version]
    finally:
        stop.set()
        swapper.join()


# --- pipeline and diagnostics --------------------------------------------------------------


def rgb_message(typestore, rgb, sec=1):
    return typestore.types["sensor_msgs/msg/Image"](
        header=make_header(typestore, sec=sec), height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8",
        is_bigendian=0, step=rgb.shape[1] * 3, data=rgb.reshape(-1).copy(),
    )


def test_pipeline_drops_bad_frames_and_keeps_going(tiny_predictor, typestore):
    warnings = []
    pipeline = FramePipeline(tiny_predictor, messages.RosbagsFactory(typestore), warn=warnings.append)
    good = rgb_message(typestore, np.zeros((40, 30, 3), np.uint8), sec=7)
    bad = rgb_message(typestore, np.zeros((40, 30, 3), np.uint8))
    bad.encoding = "weird"
    outputs = pipeline.process([Frame("front", bad, 0.0), Frame("rear", good, 0.0)], wants=lambda camera, output: output == "overlay")
    assert [o.camera for o in outputs] == ["rear"]
    out = outputs[0]
    assert out.panoptic.header.stamp.sec == 7 and out.overlay.encoding == "rgb8" and out.detections is not None
    assert pipeline.stats.bad_input["front"] == 1 and "weird" in warnings[0]
    assert pipeline.stats.overlays["rear"] == 1
    assert pipeline.process([Frame("front", bad, 0.0)]) == []
    assert len(warnings) == 1  # the same reason again: throttled
    truncated = rgb_message(typestore, np.zeros((40, 30, 3), np.uint8))
    truncated.data = truncated.data[:100]
    assert pipeline.process([Frame("front", truncated, 0.0)]) == []
    assert len(warnings) == 2 and "truncated" in warnings[1]  # another reason: its own warning


def test_pipeline_republishes_camera_info_with_the_image_header(tiny_predictor, typestore):
    pipeline = FramePipeline(tiny_predictor, messages.RosbagsFactory(typestore), warn=lambda m: None)
    side = SideInputs(["front"], slop=0.01)
    side.camera_info["front"].put(make_camera_info(typestore, make_header(typestore, 7, 5_000_000, "cam_from_info"), 40, 30))
    (out,) = pipeline.process([Frame("front", rgb_message(typestore, np.zeros((40, 30, 3), np.uint8), sec=7), 0.0)], side_inputs=side)
    assert out.camera_info.header == out.segments.header and out.camera_info.width == 30


def depth_message(typestore, depth_mm: np.ndarray, sec: int = 7, nanosec: int = 0):
    return typestore.types["sensor_msgs/msg/Image"](
        header=make_header(typestore, sec, nanosec), height=depth_mm.shape[0], width=depth_mm.shape[1], encoding="16UC1",
        is_bigendian=0, step=depth_mm.shape[1] * 2, data=depth_mm.astype("<u2").reshape(-1).view(np.uint8),
    )


def test_pipeline_measures_segments_in_3d_from_matched_depth(tiny_predictor, typestore):
    warnings = []
    pipeline = FramePipeline(tiny_predictor, messages.RosbagsFactory(typestore), warn=warnings.append)
    side = SideInputs(["front"], slop=0.01, depth=True)
    side.camera_info["front"].put(make_camera_info(typestore, make_header(typestore, 7, 0), 40, 30))
    side.depth["front"].put(depth_message(typestore, np.full((40, 30), 2000), nanosec=3_000_000))  # a wall 2 m away
    frame = Frame("front", rgb_message(typestore, np.full((40, 30, 3), 90, np.uint8), sec=7), 0.0)
    (out,) = pipeline.process([frame], side_inputs=side, wants=lambda camera, output: output in ("points", "detections_3d"))
    assert not warnings and pipeline.stats.in_3d["front"] == 1 and pipeline.stats.median_ms("depth") is not None
    measured = [s for s in out.segments.segments if s.depth_points > 0]
    assert measured and all(s.center_3d.z == pytest.approx(2.0, abs=1e-3) for s in measured)
    things = {s.id for s in measured if s.is_thing}
    assert {int(d.id) for d in out.detections_3d.detections} == things
    assert out.points.width == 20 * 15  # decimation 2, all depth valid

    (out,) = pipeline.process([frame], side_inputs=side)
    assert out.points is None and out.detections_3d is None  # only while wanted
    assert any(s.depth_points > 0 for s in out.segments.segments)  # the segments carry 3D all the same

    late = Frame("front", rgb_message(typestore, np.zeros((40, 30, 3), np.uint8), sec=9), 0.0)
    (out,) = pipeline.process([late], side_inputs=side)  # no depth near this stamp: 2D goes on
    assert out.detections_3d is None and all(s.depth_points == 0 for s in out.segments.segments)
    assert "no depth image within sync_slop" in warnings[-1] and pipeline.stats.without_3d["front"] == 1


def test_depth_threads_set_the_measurers_bands_and_change_no_box(tiny_predictor, typestore):
    """The node's depth_threads reaches each camera's measurer; the boxes are the same."""
    side = SideInputs(["front"], slop=0.01, depth=True)
    side.camera_info["front"].put(make_camera_info(typestore, make_header(typestore, 7, 0), 40, 30))
    depth = np.full((40, 30), 2000)
    depth[10:30, 5:20] = 1500  # something nearer than the wall
    side.depth["front"].put(depth_message(typestore, depth, nanosec=3_000_000))
    frame = Frame("front", rgb_message(typestore, np.full((40, 30, 3), 90, np.uint8), sec=7), 0.0)
    boxes = {}
    for threads in (1, 3):
        pipeline = FramePipeline(tiny_predictor, messages.RosbagsFactory(typestore), warn=lambda m: None, depth_threads=threads)
        (out,) = pipeline.process([frame], side_inputs=side)
        assert pipeline._measurers["front"]._rows.threads == threads
        boxes[threads] = [(s.center_3d.x, s.center_3d.y, s.center_3d.z, s.size_3d.x, s.depth_points) for s in out.segments.segments]
    assert boxes[1] == boxes[3] and any(b[-1] > 0 for b in boxes[1])
    assert NodeParameters.from_mapping({"weights": "random"}).depth_threads == 2
    with pytest.raises(ParameterError, match="depth_threads"):
        NodeParameters.from_mapping({"weights": "random", "depth_threads": 0})


@pytest.mark.parametrize(
    "depth, info_fx, reason",
    [
        (np.full((20, 30), 2000), 500.0, "must be aligned"),
        (np.zeros((40, 30)), 500.0, "no valid pixel"),
        (np.full((40, 30), 2000), 0.0, "focal length"),
    ],
)
def test_unusable_depth_is_warned_and_2d_goes_on(tiny_predictor, typestore, depth, info_fx, reason):
    warnings = []
    pipeline = FramePipeline(tiny_predictor, messages.RosbagsFactory(typestore), warn=warnings.append)
    side = SideInputs(["front"], slop=0.01, depth=True)
    side.camera_info["front"].put(make_camera_info(typestore, make_header(typestore, 7, 0), 40, 30, fx=info_fx))
    side.depth["front"].put(depth_message(typestore, depth))
    (out,) = pipeline.process([Frame("front", rgb_message(typestore, np.zeros((40, 30, 3), np.uint8), sec=7), 0.0)], side_inputs=side)
    assert out.detections_3d is None and out.segments is not None and out.panoptic is not None
    assert len(warnings) == 1 and reason in warnings[0] and "[front]" in warnings[0]


def test_throttled_warnings():
    clock, seen = FakeClock(), []
    warn = ThrottledWarnings(seen.append, period=5.0, clock=clock)
    for _ in range(3):
        warn("k", "bad frame")
    clock.now += 6
    warn("k", "bad frame")
    assert seen == ["bad frame", "bad frame (2 similar messages suppressed)"]


def test_diagnostics_summary(tiny_predictor, typestore):
    slots = LatestFrameSlots()
    pipeline = FramePipeline(tiny_predictor, messages.RosbagsFactory(typestore), warn=lambda m: None)
    slots.put("front", rgb_message(typestore, np.zeros((32, 32, 3), np.uint8)))
    pipeline.process(slots.take(timeout=0))
    level, message, values = diagnostics.summarize(["front", "rear"], slots, pipeline.stats, {"front": 10.0}, {}, 3)
    assert level == diagnostics.WARN and "rear: no frames" in message
    assert values["front/processed"] == "1" and values["vocabulary_version"] == "3"
    assert float(values["latency_engine_ms"]) > 0
    meter = diagnostics.RateMeter()
    meter.rates({"front": 0}, 0.0)
    assert meter.rates({"front": 20}, 2.0) == {"front": 10.0}


def test_lifecycle_decides_what_may_change_when():
    from ovseg_ros.node import lifecycle

    assert lifecycle.parameter_refusal("unconfigured", ["min_size", "classes"]) is None
    for state in ("inactive", "active"):
        reason = lifecycle.parameter_refusal(state, ["min_size"])
        assert "min_size is read at configure" in reason and state in reason
    assert lifecycle.parameter_refusal("active", ["classes", "things"]) is None  # checked like the service
    assert "inactive" in lifecycle.parameter_refusal("inactive", ["classes"])
    assert "use_depth, min_size" not in lifecycle.parameter_refusal("active", ["use_depth", "min_size"])  # sorted names
    assert lifecycle.vocabulary_refusal("active") is None
    assert "'classes'" in lifecycle.vocabulary_refusal("unconfigured")
    assert "inactive" in lifecycle.vocabulary_refusal("inactive")


def test_oversized_messages_are_refused_from_their_header():
    from types import SimpleNamespace

    from ovseg_ros.node.frames import oversize

    big = SimpleNamespace(height=20000, width=20000, data=b"")  # the header alone decides
    assert "20000x20000 (400000000 pixels) exceeds max_image_pixels (50000000)" in oversize(big, 50_000_000)
    assert oversize(SimpleNamespace(height=480, width=640, data=bytes(480 * 640 * 3)), 50_000_000) is None
    assert "far more than" in oversize(SimpleNamespace(height=4, width=4, data=bytes(10**6)), 50_000_000)
    compressed = SimpleNamespace(format="jpeg", data=bytes(4 * 10**6))
    assert "compressed image of 4000000 bytes" in oversize(compressed, 1_000_000)
    assert oversize(SimpleNamespace(format="jpeg", data=bytes(100)), 1_000_000) is None
    assert oversize(object(), 10) is None  # not a message: decode says why
