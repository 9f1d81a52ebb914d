"""Offline processing as a user does it with real ROS 2 tools: `ros2 bag record` of a
camera -> `ovseg bag` -> `ros2 bag info` lists every topic -> `ros2 bag play` republishes
them, label_info latched (a transient-local subscriber such as rviz receives it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ros_graph import require_ros

require_ros()

from ros_graph import LATCHED, RELIABLE, image_message, peer_node, wait_until  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from vision_msgs.msg import LabelInfo  # noqa: E402

from ovseg_msgs.msg import SegmentArray  # noqa: E402

pytestmark = pytest.mark.timeout(300)

OVSEG = str(Path(sys.executable).parent / "ovseg")


@pytest.fixture(scope="module")
def peer():
    with peer_node("ovseg_bag_test_peer") as node:
        yield node


def test_record_segment_info_play(peer, tmp_path):
    import numpy as np

    recorded = tmp_path / "camera"
    record = subprocess.Popen(
        ["ros2", "bag", "record", "-o", str(recorded), "/front/image_raw"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        publisher = peer.publisher(Image, "/front/image_raw", RELIABLE)
        assert wait_until(lambda: publisher.get_subscription_count() > 0, timeout=60), "ros2 bag record did not subscribe"
        rng = np.random.default_rng(0)
        for sec in range(1, 6):
            publisher.publish(image_message(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), sec, "front_optical"))
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        os.killpg(record.pid, signal.SIGINT)
        record.wait(30)
    assert (recorded / "metadata.yaml").is_file(), record.stdout.read().decode(errors="replace")

    segmented = tmp_path / "segmented"
    run = subprocess.run(
        [OVSEG, "bag", str(recorded), "--topic", "/front/image_raw", "--out", str(segmented), "--weights", "random",
         "--min-size", "0", "--classes", "person; car; road"],
        capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "5/5 frames segmented" in run.stdout

    info = subprocess.run(["ros2", "bag", "info", str(segmented)], capture_output=True, text=True, timeout=60)
    assert info.returncode == 0, info.stderr
    for topic in ("/front/image_raw", "/ovseg_node/front/panoptic", "/ovseg_node/front/semantic", "/ovseg_node/front/segments",
                  "/ovseg_node/front/detections", "/ovseg_node/label_info"):
        assert f"Topic: {topic} " in info.stdout, info.stdout

    labels = peer.record(LabelInfo, "/ovseg_node/label_info", LATCHED)
    segments = peer.record(SegmentArray, "/ovseg_node/front/segments", RELIABLE)
    play = subprocess.run(["ros2", "bag", "play", str(segmented)], capture_output=True, text=True, timeout=120)
    assert play.returncode == 0, play.stdout + play.stderr
    assert wait_until(lambda: labels, timeout=10), "label_info not received by a transient-local subscriber"
    assert [c.class_name for c in labels[0].class_map] == ["person", "car", "road"]
    assert wait_until(lambda: len(segments) >= 1, timeout=10)
