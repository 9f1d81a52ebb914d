"""The node with FC-CLIP (the accurate model) instead of EOV-Seg, chosen by the launch
argument `model`: it announces the model, segments frames, and stops cleanly."""

from __future__ import annotations

import time

import numpy as np
import pytest
from ros_graph import require_ros

require_ros()

from ros_graph import Launch, Peer, image_message, init_rclpy, wait_until  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from ovseg_msgs.msg import SegmentArray  # noqa: E402

pytestmark = pytest.mark.timeout(400)


def test_fc_clip_node_segments_frames(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    min_size: 0\n    device: cpu\n    variant: R50\n")
    launch = Launch(
        ["ovseg_ros", "ovseg.launch.py", "weights:=random", "model:=fc_clip", f"params_file:={params}",
         "camera_topics:=/fc/image_raw", "classes:=person; car; road"],
        tmp_path / "launch.log",
    )
    try:
        assert launch.wait_for_output("segmenting", timeout=300), launch.output
        assert "with FC-CLIP R50 (RN50 CLIP)" in launch.output
        init_rclpy()
        peer = Peer("ovseg_fc_clip_test_peer")
        try:
            received = peer.record(SegmentArray, "/ovseg_node/fc/segments")
            publisher = peer.publisher(Image, "/fc/image_raw")
            assert peer.wait_for_subscribers("/fc/image_raw", timeout=60)
            rgb = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
            deadline = time.monotonic() + 120
            while not received and time.monotonic() < deadline:
                publisher.publish(image_message(rgb, 7, "fc_optical"))
                wait_until(lambda: received, timeout=3.0)
            assert received and received[0].header.frame_id == "fc_optical"
            assert {s.label for s in received[0].segments} <= {"person", "car", "road"}
        finally:
            peer.close()
        assert launch.interrupt() == 0, launch.output[-3000:]
        assert "Traceback" not in launch.output
    finally:
        launch.kill()
