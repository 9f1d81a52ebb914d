"""launch_testing: the launch file starts the node with stand-in weights and a camera
with aligned depth (camera_topics + depth_topics). It announces its inputs and the
stand-in banner; fed colour, depth and camera_info, it publishes segments in 3D and a
labelled point cloud that decodes with sensor_msgs_py; it shuts down with exit code 0
when launch stops it."""

from __future__ import annotations

import os
import tempfile
import time
import unittest

import numpy as np
import pytest
from ros_graph import require_ros

require_ros()

import launch_testing  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from ros_graph import Peer, camera_info_message, depth_message, image_message, init_rclpy, wait_until  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from sensor_msgs_py import point_cloud2  # noqa: E402
from vision_msgs.msg import Detection3DArray  # noqa: E402

from ovseg_msgs.msg import SegmentArray  # noqa: E402

COLOUR, DEPTH, INFO = "/launch_test/color/image_raw", "/launch_test/depth/image_raw", "/launch_test/color/camera_info"
OUT = "/ovseg_node/launch_test/color"
HEIGHT, WIDTH = 48, 64
WALL_MM, BOX_MM = 2500, 1200  # a wall 2.5 m away, a box at 1.2 m in front of it


@pytest.mark.launch_test
def generate_test_description():
    params = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    params.write("/**:\n  ros__parameters:\n    min_size: 0\n    sync_slop: 0.05\n")  # small frames at their size: fast on a CPU
    params.close()
    launch_file = os.path.join(get_package_share_directory("ovseg_ros"), "launch", "ovseg.launch.py")
    ovseg = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(launch_file),
        launch_arguments={
            "weights": "random", "device": "cpu", "params_file": params.name, "camera_topics": COLOUR, "depth_topics": DEPTH,
        }.items(),
    )
    return LaunchDescription([ovseg, launch_testing.actions.ReadyToTest()])


def depth_image() -> np.ndarray:
    depth = np.full((HEIGHT, WIDTH), WALL_MM, np.uint16)
    depth[12:36, 16:40] = BOX_MM
    depth[0:4, :] = 0  # invalid rows: no points there
    return depth


class TestNodeStarts(unittest.TestCase):
    def test_announces_its_inputs(self, proc_output):
        proc_output.assertWaitFor(f"segmenting {COLOUR} (launch_test/color, depth {DEPTH})", timeout=240)

    def test_warns_about_stand_in_weights(self, proc_output):
        proc_output.assertWaitFor("STAND-IN RANDOM WEIGHTS", timeout=240)


class TestSegmentsIn3D(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        init_rclpy()  # the process's context: other ROS tests of the same pytest run share it
        cls.peer = Peer("launch_test_peer")

    @classmethod
    def tearDownClass(cls):
        cls.peer.close()

    def test_depth_and_camera_info_give_boxes_and_a_point_cloud(self, proc_output):
        proc_output.assertWaitFor("segmenting", timeout=240)
        peer = self.peer
        received = {"points": peer.record(PointCloud2, f"{OUT}/points"), "boxes": peer.record(Detection3DArray, f"{OUT}/detections_3d"),
                    "segments": peer.record(SegmentArray, f"{OUT}/segments")}
        colour, depth, info = peer.publisher(Image, COLOUR), peer.publisher(Image, DEPTH), peer.publisher(CameraInfo, INFO)
        rng = np.random.default_rng(0)
        rgb = rng.integers(0, 255, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)  # stand-in weights find segments in noise
        deadline, sec = time.monotonic() + 180, 100
        while time.monotonic() < deadline and not (received["points"] and any(
                s.depth_points for m in received["segments"] for s in m.segments)):
            sec += 1
            depth.publish(depth_message(depth_image(), sec, "launch_test_optical"))  # before and after the image: both work
            info.publish(camera_info_message(HEIGHT, WIDTH, sec, "launch_test_optical"))
            colour.publish(image_message(rgb, sec, "launch_test_optical"))
            wait_until(lambda: False, timeout=1.0)
        self.assertTrue(received["points"], "no point cloud on ~/launch_test/color/points")

        cloud = received["points"][-1]
        self.assertEqual(cloud.header.frame_id, "launch_test_optical")
        self.assertEqual([f.name for f in cloud.fields], ["x", "y", "z", "rgb", "class_index", "segment_id"])
        points = point_cloud2.read_points(cloud, field_names=("x", "y", "z", "class_index", "segment_id"))
        valid = depth_image()[::2, ::2] > 0  # points_decimation 2; invalid depth left out
        self.assertEqual(len(points), int(valid.sum()))
        np.testing.assert_allclose(np.sort(np.unique(points["z"])), [BOX_MM / 1000, WALL_MM / 1000], rtol=1e-6)
        stamp = (cloud.header.stamp.sec, cloud.header.stamp.nanosec)
        segments = next(m for m in received["segments"] if (m.header.stamp.sec, m.header.stamp.nanosec) == stamp)
        ids = {s.id for s in segments.segments}
        self.assertTrue(set(np.unique(points["segment_id"]).tolist()) <= ids | {0})

        measured = [s for s in segments.segments if s.depth_points > 0]
        self.assertTrue(measured)
        for s in measured:  # boxes lie on the wall or the box, within them
            self.assertGreaterEqual(s.center_3d.z, BOX_MM / 1000 - 1e-3)
            self.assertLessEqual(s.center_3d.z, WALL_MM / 1000 + 1e-3)
        boxes = [m for m in received["boxes"] if (m.header.stamp.sec, m.header.stamp.nanosec) == stamp]
        self.assertEqual(len(boxes), 1)
        self.assertEqual({d.id for d in boxes[0].detections}, {str(s.track_id) if s.track_id else "" for s in measured if s.is_thing})


@launch_testing.post_shutdown_test()
class TestCleanShutdown(unittest.TestCase):
    def test_exit_code(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
