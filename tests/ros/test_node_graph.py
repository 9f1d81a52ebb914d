"""The installed node end to end in a live ROS 2 graph, as a robotics engineer runs it:
`ros2 launch ovseg_ros ovseg.launch.py` with two cameras and stand-in weights on the CPU,
a peer node publishing camera frames and camera_info, calling the services and setting
parameters, and Ctrl-C (SIGINT to the process group) at the end.

The tests in this file share one launch and run in file order (the last one stops it).
"""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from ros_graph import require_ros

require_ros()

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import GetParameters, SetParameters  # noqa: E402
from ros_graph import (  # noqa: E402
    LATCHED,
    Launch,
    Peer,
    camera_info_message,
    image_message,
    init_rclpy,
    mono16,
    stamp_key,
    wait_until,
)
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from vision_msgs.msg import Detection2DArray, LabelInfo  # noqa: E402

from ovseg_msgs.msg import SegmentArray  # noqa: E402
from ovseg_msgs.srv import GetVocabulary, SetVocabulary  # noqa: E402

pytestmark = pytest.mark.timeout(600)

ASSETS = Path(__file__).resolve().parents[2] / "src" / "ovseg_ros" / "assets"
NODE = "/ovseg_node"
CAMERAS = {"front": "/front/image_raw", "rear": "/rear/image_raw"}
FRAME_IDS = {"front": "front_optical", "rear": "rear_optical"}
SIZE = (48, 64)  # small frames, fed at their size (min_size 0): CPU inference in well under a second


def sample(name: str) -> np.ndarray:
    bgr = cv2.imread(str(ASSETS / f"{name}.jpg"))
    return cv2.cvtColor(cv2.resize(bgr, (SIZE[1], SIZE[0]), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


IMAGES = {"front": sample("street"), "rear": sample("warehouse")}


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    folder = tmp_path_factory.mktemp("graph")
    params = folder / "params.yaml"
    params.write_text(
        "/**:\n  ros__parameters:\n    min_size: 0\n    device: cpu\n    diagnostics_period: 0.5\n"
        '    classes: ["person", "car, automobile", "tree", "road", "sky", "building"]\n'
    )
    launch = Launch(
        ["ovseg_ros", "ovseg.launch.py", "weights:=random", f"params_file:={params}", "camera_topics:=" + ",".join(CAMERAS.values())],
        folder / "launch.log",
    )
    try:
        assert launch.wait_for_output("segmenting", timeout=300), f"the node did not start:\n{launch.output}"
        yield launch
    finally:
        launch.kill()


@pytest.fixture(scope="module")
def peer(launched):
    init_rclpy()
    node = Peer()
    for topic in CAMERAS.values():
        assert node.wait_for_subscribers(topic, timeout=60), f"the node does not subscribe to {topic}"
    yield node
    node.close()


class Outputs:
    """Everything the node publishes for the cameras, recorded by the peer."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.topics = {}
        for camera in CAMERAS:
            base = f"{NODE}/{camera}"
            self.topics[camera] = {
                "segments": peer.record(SegmentArray, f"{base}/segments"),
                "panoptic": peer.record(Image, f"{base}/panoptic"),
                "semantic": peer.record(Image, f"{base}/semantic"),
                "detections": peer.record(Detection2DArray, f"{base}/detections"),
                "camera_info": peer.record(CameraInfo, f"{base}/camera_info"),
            }
        self.diagnostics = peer.record(DiagnosticArray, "/diagnostics")

    def find(self, camera: str, kind: str, stamp: tuple[int, int]):
        return next((m for m in reversed(self.topics[camera][kind]) if stamp_key(m.header) == stamp), None)

    def latest_diagnostics(self) -> dict[str, str]:
        for array in reversed(self.diagnostics):
            for status in array.status:
                if status.name.startswith("ovseg_node"):
                    return {kv.key: kv.value for kv in status.values}
        return {}


@pytest.fixture(scope="module")
def outputs(peer):
    return Outputs(peer)


def send_frame(peer: Peer, camera: str, sec: int, image: np.ndarray | None = None, with_info: bool = True) -> None:
    topic = CAMERAS[camera]
    if with_info:
        peer.publisher(CameraInfo, topic.rsplit("/", 1)[0] + "/camera_info").publish(
            camera_info_message(*SIZE, sec=sec, frame_id=FRAME_IDS[camera])
        )
    peer.publisher(Image, topic).publish(image_message(IMAGES[camera] if image is None else image, sec, FRAME_IDS[camera]))


def segment_frame(peer: Peer, outputs: Outputs, camera: str, sec: int, kinds=("segments", "panoptic", "semantic", "detections", "camera_info")):
    """Publish one stamped frame (again, until it gets through best effort) and wait for all its outputs."""

    def arrived():
        return all(outputs.find(camera, kind, (sec, 0)) is not None for kind in kinds)

    deadline = time.monotonic() + 120
    while not arrived() and time.monotonic() < deadline:
        send_frame(peer, camera, sec)
        wait_until(arrived, timeout=3.0)
    assert arrived(), f"no complete output for {camera} frame {sec}"
    return {kind: outputs.find(camera, kind, (sec, 0)) for kind in kinds}


def test_topics_and_types(peer):
    expected = {
        f"{NODE}/label_info": "vision_msgs/msg/LabelInfo",
        "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
    }
    for camera in CAMERAS:
        expected.update({
            f"{NODE}/{camera}/panoptic": "sensor_msgs/msg/Image",
            f"{NODE}/{camera}/semantic": "sensor_msgs/msg/Image",
            f"{NODE}/{camera}/overlay": "sensor_msgs/msg/Image",
            f"{NODE}/{camera}/segments": "ovseg_msgs/msg/SegmentArray",
            f"{NODE}/{camera}/detections": "vision_msgs/msg/Detection2DArray",
            f"{NODE}/{camera}/camera_info": "sensor_msgs/msg/CameraInfo",
        })

    def listed():
        return dict((name, types[0]) for name, types in peer.node.get_topic_names_and_types())

    assert wait_until(lambda: expected.items() <= listed().items(), timeout=30), sorted(set(expected.items()) - set(listed().items()))
    inputs = {
        "/front/image_raw": "sensor_msgs/msg/Image", "/front/camera_info": "sensor_msgs/msg/CameraInfo",
        "/rear/image_raw": "sensor_msgs/msg/Image", "/rear/camera_info": "sensor_msgs/msg/CameraInfo",
    }

    def subscribed():
        """Input topic -> type, for the subscriptions the node named ovseg_node holds. Asked per
        topic, not per node name: an ovseg_node of an earlier test may linger in discovery
        for a while, and a lookup by name can answer with that one."""
        return {
            topic: info.topic_type
            for topic in inputs
            for info in peer.node.get_subscriptions_info_by_topic(topic)
            if info.node_name == "ovseg_node" and info.node_namespace == "/"
        }

    assert wait_until(lambda: inputs.items() <= subscribed().items(), timeout=30), subscribed()


@pytest.mark.parametrize("camera", list(CAMERAS))
def test_outputs_carry_the_frame_and_agree(peer, outputs, camera):
    sec = 100 + list(CAMERAS).index(camera)
    got = segment_frame(peer, outputs, camera, sec)
    for kind, msg in got.items():
        assert stamp_key(msg.header) == (sec, 0) and msg.header.frame_id == FRAME_IDS[camera], kind
    segments = got["segments"].segments
    assert segments, "stand-in weights give at least one segment on the sample images"
    panoptic = mono16(got["panoptic"])
    assert panoptic.shape == SIZE
    ids = {int(s.id) for s in segments}
    assert set(np.unique(panoptic).tolist()) - {0} == ids
    for s in segments:
        assert s.area == int((panoptic == s.id).sum())
        ys, xs = np.nonzero(panoptic == s.id)
        assert (s.bbox.x_offset, s.bbox.y_offset, s.bbox.width, s.bbox.height) == (
            xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1,
        )
    # one detection per thing, in segment order; its id is the segment's track id ("" until confirmed)
    things = [s for s in segments if s.is_thing]
    detections = got["detections"].detections
    assert [d.id for d in detections] == [str(s.track_id) if s.track_id else "" for s in things]
    assert [d.results[0].hypothesis.class_id for d in detections] == [s.label for s in things]
    semantic = mono16(got["semantic"])
    vocabulary = peer.call(GetVocabulary, f"{NODE}/get_vocabulary", GetVocabulary.Request())
    assert set(np.unique(semantic).tolist()) <= set(range(len(vocabulary.classes))) | {65535}
    labels = [c.split(",")[0] for c in vocabulary.classes]
    assert all(labels[s.class_index] == s.label for s in segments)
    info = got["camera_info"]
    assert (info.height, info.width) == SIZE and list(info.k) == list(camera_info_message(*SIZE, sec, "x").k)


def test_frames_without_camera_info_still_segmented(peer, outputs):
    sec = 150
    deadline = time.monotonic() + 60
    while outputs.find("front", "segments", (sec, 0)) is None and time.monotonic() < deadline:
        send_frame(peer, "front", sec, with_info=False)
        wait_until(lambda: outputs.find("front", "segments", (sec, 0)) is not None, timeout=3.0)
    assert outputs.find("front", "segments", (sec, 0)) is not None
    time.sleep(0.5)
    assert outputs.find("front", "camera_info", (sec, 0)) is None  # no partner within sync_slop: none sent


def test_overlay_only_while_subscribed(peer, outputs):
    assert wait_until(lambda: outputs.latest_diagnostics().get("front/processed", "0") != "0", timeout=10)
    assert outputs.latest_diagnostics()["front/overlays_rendered"] == "0"
    overlays = peer.record(Image, f"{NODE}/front/overlay")
    sec = 200
    deadline = time.monotonic() + 60
    while not any(stamp_key(m.header) == (sec, 0) for m in overlays) and time.monotonic() < deadline:
        send_frame(peer, "front", sec)
        wait_until(lambda: any(stamp_key(m.header) == (sec, 0) for m in overlays), timeout=3.0)
    overlay = next(m for m in overlays if stamp_key(m.header) == (sec, 0))
    assert overlay.encoding == "rgb8" and (overlay.height, overlay.width) == SIZE
    assert wait_until(lambda: int(outputs.latest_diagnostics().get("front/overlays_rendered", "0")) > 0, timeout=10)


def test_diagnostics(outputs):
    values = wait_until(outputs.latest_diagnostics, timeout=10)
    for key in ("vocabulary_version", "latency_engine_ms", "front/input_hz", "rear/output_hz", "front/dropped_bad_input"):
        assert key in values, key
    assert outputs.diagnostics[-1].header.frame_id


def test_label_info_latched_and_republished(peer):
    late = peer.record(LabelInfo, f"{NODE}/label_info", LATCHED)
    assert wait_until(lambda: late, timeout=10), "a late transient-local subscriber gets the active label_info"
    active = peer.call(GetVocabulary, f"{NODE}/get_vocabulary", GetVocabulary.Request())
    assert [c.class_name for c in late[-1].class_map] == [c.split(",")[0] for c in active.classes]
    assert late[-1].header.frame_id in FRAME_IDS.values()
    reply = peer.call(SetVocabulary, f"{NODE}/set_vocabulary", SetVocabulary.Request(classes=["person", "bicycle", "road"], things=[]))
    assert reply.success
    assert wait_until(lambda: [c.class_name for c in late[-1].class_map] == ["person", "bicycle", "road"], timeout=10)


def test_bad_frames_are_dropped_with_one_warning_per_reason(peer, outputs, launched):
    bad_encoding = image_message(IMAGES["front"], 300, FRAME_IDS["front"])
    bad_encoding.encoding = "weird16"
    truncated = image_message(IMAGES["front"], 301, FRAME_IDS["front"])
    truncated.data = truncated.data[: len(truncated.data) // 2]
    empty = image_message(IMAGES["front"][:0], 302, FRAME_IDS["front"])
    before = int(outputs.latest_diagnostics().get("front/dropped_bad_input", "0"))
    publisher = peer.publisher(Image, CAMERAS["front"])
    for sec, bad in zip((310, 311, 312), (bad_encoding, truncated, empty)):
        publisher.publish(bad)
        time.sleep(0.5)  # each bad frame gets its turn (the newest frame replaces an older one)
        segment_frame(peer, outputs, "front", sec, kinds=("segments",))
    assert wait_until(lambda: int(outputs.latest_diagnostics().get("front/dropped_bad_input", "0")) >= before + 3, timeout=10)
    log = launched.output
    assert "unsupported encoding 'weird16'" in log and "truncated image" in log and "no pixels" in log


def _parameters(peer: Peer, *names: str) -> dict:
    reply = peer.call(GetParameters, f"{NODE}/get_parameters", GetParameters.Request(names=list(names)))
    return {name: list(value.string_array_value) for name, value in zip(names, reply.values)}


def _set_parameter(peer: Peer, name: str, values: list[str]):
    value = ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=values)
    reply = peer.call(SetParameters, f"{NODE}/set_parameters", SetParameters.Request(parameters=[ParameterMsg(name=name, value=value)]))
    return reply.results[0]


def test_vocabulary_by_service_and_parameters_stay_one_state(peer):
    def active():
        return peer.call(GetVocabulary, f"{NODE}/get_vocabulary", GetVocabulary.Request())

    before = active()
    refused = peer.call(SetVocabulary, f"{NODE}/set_vocabulary", SetVocabulary.Request(classes=["a", "A"], things=[]))
    assert not refused.success and "appears" in refused.message and refused.vocabulary_version == before.vocabulary_version
    accepted = peer.call(
        SetVocabulary, f"{NODE}/set_vocabulary", SetVocabulary.Request(classes=["Person", "car, automobile", " tree "], things=[])
    )
    assert accepted.success and accepted.vocabulary_version == before.vocabulary_version + 1
    now = active()
    assert list(now.classes) == ["person", "car, automobile", "tree"] and list(now.things) == ["person", "car"]
    assert list(now.seen_in_training) == [True, True, True]
    assert _parameters(peer, "classes", "things") == {"classes": list(now.classes), "things": ["person", "car"]}

    result = _set_parameter(peer, "classes", ["dog", "grass", "forklift"])  # things inferred
    assert result.successful, result.reason
    now = active()
    assert list(now.classes) == ["dog", "grass", "forklift"] and list(now.things) == ["dog"]
    assert _parameters(peer, "things") == {"things": ["dog"]}
    result = _set_parameter(peer, "things", ["forklift", "dog"])
    assert result.successful and list(active().things) == ["dog", "forklift"]

    for bad in ([], ["x; y"], ["same", "Same"]):
        result = _set_parameter(peer, "classes", bad)
        assert not result.successful and result.reason
    assert list(active().classes) == ["dog", "grass", "forklift"]
    assert _parameters(peer, "classes")["classes"] == ["dog", "grass", "forklift"]


def test_ros2_cli_as_a_user_types_it(peer):
    call = subprocess.run(
        ["ros2", "service", "call", f"{NODE}/set_vocabulary", "ovseg_msgs/srv/SetVocabulary",
         "{classes: ['person', 'forklift, fork lift truck', 'pallet', 'floor'], things: ['person', 'forklift', 'pallet']}"],
        capture_output=True, text=True, timeout=60,
    )
    assert call.returncode == 0 and "success=True" in call.stdout, call.stdout + call.stderr
    get = subprocess.run(["ros2", "param", "get", NODE, "things"], capture_output=True, text=True, timeout=60)
    assert "['person', 'forklift', 'pallet']" in get.stdout, get.stdout + get.stderr


POOL = ["person", "car, automobile", "tree", "road", "sky", "forklift", "pallet, skid", "box", "dog", "chair", "floor", "wall"]
BAD = [([], []), (["a", "A"], []), (["x; y"], []), (["ok"], ["nope"]), (["bad\x07name"], []), (["word " * 80], [])]


def test_fuzz_services_parameters_and_frames(peer, outputs):
    """200 random good and bad vocabulary requests, parameter sets and frames: the node
    stays alive, and every output carries a vocabulary that was active between its frame's
    publication and its arrival, with labels from that vocabulary."""
    rng = random.Random(8)
    labels = {}  # version -> labels
    state = peer.call(GetVocabulary, f"{NODE}/get_vocabulary", GetVocabulary.Request())
    version, labels[state.vocabulary_version] = state.vocabulary_version, [c.split(",")[0] for c in state.classes]
    published = {}  # stamp sec -> version confirmed active before it was published
    sec = 1000
    for _ in range(200):
        op = rng.random()
        if op < 0.35:
            sec += 1
            published[sec] = version
            send_frame(peer, "front", sec)
        elif op < 0.65:
            classes = rng.sample(POOL, rng.randint(1, 5))
            things = rng.sample(classes, rng.randint(0, len(classes)))
            reply = peer.call(SetVocabulary, f"{NODE}/set_vocabulary", SetVocabulary.Request(classes=classes, things=things))
            assert reply.success, reply.message
            version = reply.vocabulary_version
            labels[version] = [c.split(",")[0].strip() for c in classes]
        elif op < 0.85:
            classes, things = rng.choice(BAD)
            reply = peer.call(SetVocabulary, f"{NODE}/set_vocabulary", SetVocabulary.Request(classes=classes, things=things))
            assert not reply.success and reply.message and reply.vocabulary_version == version
        else:
            good = rng.random() < 0.5
            classes = rng.sample(POOL, rng.randint(1, 4)) if good else rng.choice([c for c, t in BAD if not t])
            result = _set_parameter(peer, "classes", classes)
            assert result.successful == good, result.reason
            if good:
                version += 1
                labels[version] = [c.split(",")[0].strip() for c in classes]
    final = peer.call(GetVocabulary, f"{NODE}/get_vocabulary", GetVocabulary.Request())
    assert final.vocabulary_version == version and [c.split(",")[0] for c in final.classes] == labels[version]
    wait_until(lambda: outputs.find("front", "segments", (sec, 0)) is not None, timeout=60)
    checked = 0
    for message in outputs.topics["front"]["segments"]:
        stamp = message.header.stamp.sec
        if stamp not in published:
            continue
        assert published[stamp] <= message.vocabulary_version <= version, (stamp, message.vocabulary_version)
        for s in message.segments:
            assert labels[message.vocabulary_version][s.class_index] == s.label
        checked += 1
    assert checked >= 10, f"only {checked} fuzzed frames came back"


def test_ctrl_c_exits_cleanly(launched, peer):
    code = launched.interrupt(timeout=60)
    log = launched.output
    assert code == 0, log[-3000:]
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-3000:]
    assert "process has finished cleanly" in log
