"""The node with SAN or SED (semantic-only models), chosen by the launch argument `model`:
it announces the model, publishes the semantic image and one Segment per class present
(none of them a thing, so no detections), and stops cleanly."""

from __future__ import annotations

import time

import numpy as np
import pytest
from ros_graph import require_ros

require_ros()

from ovseg_msgs.msg import SegmentArray
from ros_graph import Launch, Peer, image_message, init_rclpy, mono16, wait_until
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

pytestmark = pytest.mark.timeout(400)


@pytest.mark.parametrize("model,announced", [("san", "SAN B (ViT-B/16 CLIP)"), ("sed", "SED B (convnext_base_w_320 CLIP)")])
def test_semantic_node_publishes_class_regions(tmp_path, model, announced):
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    min_size: 0\n    device: cpu\n    early_rejection_topk: 2\n")
    launch = Launch(
        ["ovseg_ros", "ovseg.launch.py", "weights:=random", f"model:={model}", f"params_file:={params}",
         "camera_topics:=/sem/image_raw", "classes:=person; car, automobile; road; sky", "things:=person; car"],
        tmp_path / "launch.log",
    )
    try:
        assert launch.wait_for_output("segmenting", timeout=300), launch.output
        assert f"with {announced}" in launch.output
        init_rclpy()
        peer = Peer(f"ovseg_{model}_test_peer")
        try:
            segments = peer.record(SegmentArray, "/ovseg_node/sem/segments")
            semantic = peer.record(Image, "/ovseg_node/sem/semantic")
            panoptic = peer.record(Image, "/ovseg_node/sem/panoptic")
            detections = peer.record(Detection2DArray, "/ovseg_node/sem/detections")
            publisher = peer.publisher(Image, "/sem/image_raw")
            assert peer.wait_for_subscribers("/sem/image_raw", timeout=60)
            rgb = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
            deadline = time.monotonic() + 120
            while not (segments and semantic and panoptic and detections) and time.monotonic() < deadline:
                publisher.publish(image_message(rgb, 7, "sem_optical"))
                wait_until(lambda: segments and semantic and panoptic and detections, timeout=3.0)
            assert segments and semantic and panoptic and detections
            frame = segments[0]
            assert frame.segments and all(not s.is_thing for s in frame.segments)
            assert {s.label for s in frame.segments} <= {"person", "car", "road", "sky"}
            assert detections[0].detections == []  # detections are of things only
            ids = mono16(panoptic[0])
            assert sorted(set(np.unique(ids).tolist()) - {0}) == sorted(s.id for s in frame.segments)
            assert sum(s.area for s in frame.segments) == int((ids > 0).sum())
        finally:
            peer.close()
        assert launch.interrupt() == 0, launch.output[-3000:]
        assert "Traceback" not in launch.output
    finally:
        launch.kill()
