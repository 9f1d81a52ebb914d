"""`ros2 launch ovseg_ros ovseg.launch.py` starts the node, which then shuts down
cleanly on SIGINT (exit code 0). Needs a sourced ROS 2 workspace with the packages built;
skipped with the reason otherwise (ROS 2 is not on PyPI)."""

from __future__ import annotations

import os
import unittest

import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (ROS 2 is not on PyPI); source a ROS 2 workspace")
pytest.importorskip("launch_testing", reason="launch_testing is not installed (part of ROS 2)")
pytest.importorskip("ovseg_msgs.msg", reason="ovseg_msgs is not built; run colcon build in ros2_ws/ and source it")

import launch_testing  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402


@pytest.mark.launch_test
def generate_test_description():
    launch_file = os.path.join(get_package_share_directory("ovseg_ros"), "launch", "ovseg.launch.py")
    ovseg = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(launch_file),
        launch_arguments={"weights": "random", "device": "cpu", "camera_topics": "/launch_test/image_raw"}.items(),
    )
    return LaunchDescription([ovseg, launch_testing.actions.ReadyToTest()])


class TestNodeStarts(unittest.TestCase):
    def test_announces_its_topics(self, proc_output):
        proc_output.assertWaitFor("segmenting /launch_test/image_raw", timeout=180)

    def test_warns_about_stand_in_weights(self, proc_output):
        proc_output.assertWaitFor("STAND-IN RANDOM WEIGHTS", timeout=180)


@launch_testing.post_shutdown_test()
class TestCleanShutdown(unittest.TestCase):
    def test_exit_code(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
