"""The node under a real rclpy (run in a sourced ROS 2 workspace, e.g. `colcon test`).

Skipped, with the reason, where rclpy or the built ovseg_msgs are not importable:
ROS 2 is not on PyPI, so CI has neither. No mock rclpy is used.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (ROS 2 is not on PyPI); source a ROS 2 workspace")
pytest.importorskip("ovseg_msgs.srv", reason="ovseg_msgs is not built; run colcon build in ros2_ws/ and source it")

from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from ovseg_msgs.msg import SegmentArray  # noqa: E402
from ovseg_msgs.srv import GetVocabulary, SetVocabulary  # noqa: E402
from ovseg_ros.node.ros_node import OvsegNode  # noqa: E402


@pytest.fixture()
def running_node():
    rclpy.init(args=[
        "--ros-args", "-p", "weights:=random", "-p", "device:=cpu", "-p", "min_size:=0",
        "-p", "image_topics:=['/test_cam/image_raw']",
    ])
    node = OvsegNode()
    peer = Node("ovseg_test_peer")
    executor = MultiThreadedExecutor()
    executor.add_node(node)
    executor.add_node(peer)
    yield node, peer, executor
    executor.shutdown()
    node.destroy_node()
    peer.destroy_node()
    rclpy.try_shutdown()


def spin_until(executor, condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not condition():
        executor.spin_once(timeout_sec=0.1)
    return condition()


def test_frames_in_segments_out(running_node):
    node, peer, executor = running_node
    received = []
    peer.create_subscription(SegmentArray, "/ovseg_node/test_cam/segments", received.append, 10)
    pub = peer.create_publisher(Image, "/test_cam/image_raw", qos_profile_sensor_data)
    image = Image(height=48, width=64, encoding="rgb8", step=64 * 3)
    image.header.frame_id = "test_cam"
    image.data = np.random.default_rng(0).integers(0, 255, 48 * 64 * 3, dtype=np.uint8).tobytes()
    bad = Image(height=48, width=64, encoding="rgb8", step=64 * 3)  # no data: dropped and logged
    pub.publish(bad)
    assert spin_until(executor, lambda: (pub.publish(image), bool(received))[1])
    assert received[0].header.frame_id == "test_cam" and received[0].vocabulary_version == 1


def test_vocabulary_service(running_node):
    node, peer, executor = running_node
    set_client = peer.create_client(SetVocabulary, "/ovseg_node/set_vocabulary")
    get_client = peer.create_client(GetVocabulary, "/ovseg_node/get_vocabulary")
    assert set_client.wait_for_service(timeout_sec=10.0)

    def call(client, request):
        future = client.call_async(request)
        assert spin_until(executor, future.done)
        return future.result()

    refused = call(set_client, SetVocabulary.Request(classes=["a", "A"], things=[]))
    assert not refused.success and "appears" in refused.message and refused.vocabulary_version == 1
    accepted = call(set_client, SetVocabulary.Request(classes=["person", "car, automobile"], things=["car"]))
    assert accepted.success and accepted.vocabulary_version == 2
    active = call(get_client, GetVocabulary.Request())
    assert list(active.classes) == ["person", "car, automobile"] and list(active.things) == ["car"]
