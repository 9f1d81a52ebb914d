"""Segments in 3D in a live graph, as a user runs it: two cameras with aligned depth
(`depth_topics:=`), one of which sends depth of the wrong size. That camera's frames are
still segmented in 2D with a warning naming the reason; the other one's come out in 3D,
and `ros2 topic echo` shows its boxes."""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest
from ros_graph import require_ros

require_ros()

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from ros_graph import Launch, Peer, camera_info_message, image_message, init_rclpy, stamp_key, wait_until  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from ovseg_msgs.msg import SegmentArray  # noqa: E402

pytestmark = pytest.mark.timeout(600)

NODE = "/ovseg_node"
CAMERAS = {"front": ("/front/image_raw", "/front/depth/image_raw"), "rear": ("/rear/image_raw", "/rear/depth/image_raw")}
SIZE = (48, 64)
RGB = np.random.default_rng(0).integers(0, 255, size=(*SIZE, 3), dtype=np.uint8)  # stand-in weights find segments in noise


def depth_message(height: int, width: int, sec: int) -> Image:
    msg = Image(height=height, width=width, encoding="32FC1", step=width * 4)
    msg.header.stamp.sec, msg.header.frame_id = sec, "optical"
    msg.data = np.full((height, width), 1.75, "<f4").tobytes()
    return msg


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    folder = tmp_path_factory.mktemp("depth_graph")
    params = folder / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    min_size: 0\n    device: cpu\n    diagnostics_period: 0.5\n    sync_slop: 0.05\n")
    launch = Launch(
        ["ovseg_ros", "ovseg.launch.py", "weights:=random", f"params_file:={params}",
         "camera_topics:=" + ",".join(image for image, _ in CAMERAS.values()),
         "depth_topics:=" + ",".join(depth for _, depth in CAMERAS.values())],
        folder / "launch.log",
    )
    init_rclpy()
    peer = None
    try:
        assert launch.wait_for_output("segmenting", timeout=300), f"the node did not start:\n{launch.output}"
        peer = Peer("ovseg_depth_peer")
        for _, depth in CAMERAS.values():
            assert peer.wait_for_subscribers(depth, timeout=60), f"the node does not subscribe to {depth}"
        yield launch, peer
    finally:
        if peer is not None:
            peer.close()
        launch.kill()


def send(peer: Peer, camera: str, sec: int) -> None:
    image_topic, depth_topic = CAMERAS[camera]
    height, width = SIZE if camera == "rear" else (SIZE[0] // 2, SIZE[1] // 2)  # front: not aligned to its image
    peer.publisher(CameraInfo, image_topic.rsplit("/", 1)[0] + "/camera_info").publish(camera_info_message(*SIZE, sec=sec, frame_id="optical"))
    peer.publisher(Image, depth_topic).publish(depth_message(height, width, sec))
    peer.publisher(Image, image_topic).publish(image_message(RGB, sec, "optical"))


def test_bad_depth_keeps_2d_and_good_depth_gives_3d(graph):
    launch, peer = graph
    segments = {camera: peer.record(SegmentArray, f"{NODE}/{camera}/segments") for camera in CAMERAS}
    diagnostics = peer.record(DiagnosticArray, "/diagnostics")
    echo = subprocess.Popen(
        ["ros2", "topic", "echo", "--once", f"{NODE}/rear/detections_3d", "vision_msgs/msg/Detection3DArray"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        sec, deadline = 200, time.monotonic() + 180
        while time.monotonic() < deadline and not (segments["front"] and any(
                s.depth_points for m in segments["rear"] for s in m.segments) and echo.poll() is not None):
            sec += 1
            for camera in CAMERAS:
                send(peer, camera, sec)
            wait_until(lambda: False, timeout=1.0)
        echoed = echo.communicate(timeout=30)[0] if echo.poll() is not None else ""
    finally:
        if echo.poll() is None:
            echo.kill()
    assert segments["front"], "the camera with bad depth must still be segmented in 2D"
    assert all(s.depth_points == 0 and np.isnan(s.center_3d.z) for m in segments["front"] for s in m.segments)
    assert "[front] no 3D for a frame (2D outputs go on): depth is 32x24" in launch.output
    rear = [s for m in segments["rear"] for s in m.segments if s.depth_points]
    assert rear and all(abs(s.center_3d.z - 1.75) < 1e-3 for s in rear)
    assert "detections:" in echoed and "header:" in echoed, echoed
    assert wait_until(lambda: any(kv.key == "front/frames_without_3d" and int(kv.value) > 0
                                  for a in diagnostics for st in a.status for kv in st.values), timeout=10)
    assert launch.process.poll() is None  # still running
    assert launch.interrupt() == 0
    assert stamp_key(segments["rear"][-1].header)[0] > 200
