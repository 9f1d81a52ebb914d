"""launch_testing: the launch file starts the node with stand-in weights, it announces
its inputs and the stand-in banner, and shuts down with exit code 0 when launch stops it."""

from __future__ import annotations

import os
import unittest

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


@pytest.mark.launch_test
def generate_test_description():
    launch_file = os.path.join(get_package_share_directory("ovseg_ros"), "launch", "ovseg.launch.py")
    ovseg = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(launch_file),
        launch_arguments={"weights": "random", "device": "cpu", "camera_topics": "/launch_test/image_raw"}.items(),
    )
    return LaunchDescription([ovseg, launch_testing.actions.ReadyToTest()])


class TestNodeStarts(unittest.TestCase):
    def test_announces_its_inputs(self, proc_output):
        proc_output.assertWaitFor("segmenting /launch_test/image_raw (launch_test)", timeout=240)

    def test_warns_about_stand_in_weights(self, proc_output):
        proc_output.assertWaitFor("STAND-IN RANDOM WEIGHTS", timeout=240)


@launch_testing.post_shutdown_test()
class TestCleanShutdown(unittest.TestCase):
    def test_exit_code(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
