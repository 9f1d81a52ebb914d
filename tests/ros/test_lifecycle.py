"""The node as a managed (lifecycle) node, driven as a lifecycle manager or
`ros2 lifecycle set` drives it: `ros2 launch ... autostart:=false`, then every transition
through the node's lifecycle services, with a configure that fails (and says why), the
vocabulary service refused while inactive, parameters refused outside unconfigured, the
model released at deactivate and loaded again at activate, and shutdown ending the
process with exit code 0.

The tests in this file share one launch and run in file order."""

from __future__ import annotations

import time

import numpy as np
import pytest
from ros_graph import require_ros

require_ros()

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from ros_graph import camera_info_message, image_message, launched_node, peer_node, stamp_key, wait_until  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from ovseg_msgs.msg import SegmentArray  # noqa: E402
from ovseg_msgs.srv import GetVocabulary, SetVocabulary  # noqa: E402

pytestmark = pytest.mark.timeout(600)

NODE = "/ovseg_node"
IMAGE, INFO = "/managed/image_raw", "/managed/camera_info"
OUT = f"{NODE}/managed"


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    parameters = ["min_size: 0", "device: cpu", "diagnostics_period: 0.3", "release_on_deactivate: true",
                  'classes: ["person", "person"]']  # configure refuses this vocabulary
    with launched_node(tmp_path_factory.mktemp("lifecycle"), parameters, [f"camera_topics:={IMAGE}", "autostart:=false"],
                       ready="waiting for a lifecycle manager") as launch:
        yield launch


@pytest.fixture(scope="module")
def peer(launched):
    with peer_node("ovseg_lifecycle_peer") as node:
        yield node


def state(peer) -> str:
    return peer.call(GetState, f"{NODE}/get_state", GetState.Request()).current_state.label


def transition(peer, transition_id: int) -> bool:
    return peer.call(ChangeState, f"{NODE}/change_state", ChangeState.Request(transition=Transition(id=transition_id)), timeout=180).success


def set_parameter(peer, name: str, value: ParameterValue):
    reply = peer.call(SetParameters, f"{NODE}/set_parameters", SetParameters.Request(parameters=[ParameterMsg(name=name, value=value)]))
    return reply.results[0]


def strings(*values: str) -> ParameterValue:
    return ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=list(values))


def integer(value: int) -> ParameterValue:
    return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)


def subscribed(peer) -> bool:
    return any(info.node_name == "ovseg_node" for info in peer.node.get_subscriptions_info_by_topic(IMAGE))


def publishes(peer) -> bool:
    return any(info.node_name == "ovseg_node" for info in peer.node.get_publishers_info_by_topic(f"{OUT}/segments"))


def send_frames(peer, first_sec: int, count: int) -> None:
    rgb = np.random.default_rng(first_sec).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    for sec in range(first_sec, first_sec + count):
        peer.publisher(CameraInfo, INFO).publish(camera_info_message(48, 64, sec, "managed_optical"))
        peer.publisher(Image, IMAGE).publish(image_message(rgb, sec, "managed_optical"))
        time.sleep(0.3)


def test_starts_unconfigured_and_refuses_the_vocabulary_service(peer):
    assert state(peer) == "unconfigured"
    assert not subscribed(peer) and not publishes(peer)
    reply = peer.call(SetVocabulary, f"{NODE}/set_vocabulary", SetVocabulary.Request(classes=["box"], things=[]))
    assert not reply.success and "unconfigured" in reply.message and "'classes'" in reply.message
    assert list(peer.call(GetVocabulary, f"{NODE}/get_vocabulary", GetVocabulary.Request()).classes) == ["person", "person"]


def test_failed_configure_says_why_and_stays_unconfigured(peer, launched):
    assert not transition(peer, Transition.TRANSITION_CONFIGURE)
    assert state(peer) == "unconfigured"
    assert wait_until(lambda: "configure refused" in launched.output, timeout=10)
    assert "appears in classes 0 and 1" in launched.output
    assert launched.process.poll() is None


def test_settings_change_while_unconfigured_then_configure(peer):
    assert set_parameter(peer, "classes", strings("person", "car", "road")).successful
    assert set_parameter(peer, "min_size", integer(0)).successful
    bad = set_parameter(peer, "min_size", integer(-5))
    assert not bad.successful and "min_size" in bad.reason
    assert transition(peer, Transition.TRANSITION_CONFIGURE)
    assert state(peer) == "inactive"
    assert wait_until(lambda: publishes(peer), timeout=10), "configure creates the output topics"
    assert not subscribed(peer), "inactive: no camera subscription"


def test_inactive_refuses_settings_and_vocabulary_and_reports_it(peer):
    refused = set_parameter(peer, "min_size", integer(320))
    assert not refused.successful and "read at configure" in refused.reason and "inactive" in refused.reason
    reply = peer.call(SetVocabulary, f"{NODE}/set_vocabulary", SetVocabulary.Request(classes=["box"], things=[]))
    assert not reply.success and "inactive" in reply.message
    assert not set_parameter(peer, "classes", strings("box")).successful
    diagnostics = peer.record(DiagnosticArray, "/diagnostics")
    assert wait_until(lambda: any(s.message.startswith("inactive") for a in diagnostics for s in a.status), timeout=10)


def test_activate_segments_and_takes_vocabularies(peer):
    segments = peer.record(SegmentArray, f"{OUT}/segments")
    assert transition(peer, Transition.TRANSITION_ACTIVATE)
    assert state(peer) == "active"
    assert wait_until(lambda: subscribed(peer), timeout=10)
    assert wait_until(lambda: peer.node.count_subscribers(IMAGE) > 0, timeout=10)
    deadline = time.monotonic() + 60
    while not segments and time.monotonic() < deadline:
        send_frames(peer, 10, 3)
    assert segments, "no output once active"
    reply = peer.call(SetVocabulary, f"{NODE}/set_vocabulary", SetVocabulary.Request(classes=["person", "forklift", "floor"], things=[]))
    assert reply.success, reply.message
    pytest.version_before_release = reply.vocabulary_version


def test_deactivate_stops_and_releases_the_model(peer, launched):
    segments = peer.record(SegmentArray, f"{OUT}/segments")
    assert transition(peer, Transition.TRANSITION_DEACTIVATE)
    assert state(peer) == "inactive"
    assert wait_until(lambda: not subscribed(peer), timeout=10), "deactivate drops the camera subscription"
    assert wait_until(lambda: "deactivated: model released" in launched.output, timeout=10)
    send_frames(peer, 30, 3)
    time.sleep(1.0)
    assert not [m for m in segments if stamp_key(m.header)[0] >= 30], "nothing is published while inactive"
    vocabulary = peer.call(GetVocabulary, f"{NODE}/get_vocabulary", GetVocabulary.Request())
    assert list(vocabulary.classes) == ["person", "forklift", "floor"]  # kept for the next activation


def test_activate_again_loads_the_model_with_its_vocabulary(peer):
    segments = peer.record(SegmentArray, f"{OUT}/segments")
    assert transition(peer, Transition.TRANSITION_ACTIVATE)
    assert state(peer) == "active"
    vocabulary = peer.call(GetVocabulary, f"{NODE}/get_vocabulary", GetVocabulary.Request())
    assert list(vocabulary.classes) == ["person", "forklift", "floor"]
    assert vocabulary.vocabulary_version > pytest.version_before_release, "versions keep increasing across a release"
    assert wait_until(lambda: peer.node.count_subscribers(IMAGE) > 0, timeout=10)
    deadline = time.monotonic() + 60
    while not segments and time.monotonic() < deadline:
        send_frames(peer, 50, 3)
    assert segments and all(s.label in ("person", "forklift", "floor") for m in segments for s in m.segments)


def test_deactivate_cleanup_then_configure_with_new_settings(peer, launched):
    assert transition(peer, Transition.TRANSITION_DEACTIVATE)
    assert transition(peer, Transition.TRANSITION_CLEANUP)
    assert state(peer) == "unconfigured"
    assert wait_until(lambda: not publishes(peer), timeout=10), "cleanup releases the output topics"
    assert set_parameter(peer, "min_size", integer(32)).successful  # unconfigured again: settings change
    assert transition(peer, Transition.TRANSITION_CONFIGURE)
    assert state(peer) == "inactive"


def test_shutdown_ends_the_process_cleanly(peer, launched):
    assert transition(peer, Transition.TRANSITION_INACTIVE_SHUTDOWN)
    code = launched.process.wait(60)
    log = launched.output
    assert code == 0, log[-3000:]
    assert "shut down: exiting" in log and "Traceback" not in log, log[-3000:]
