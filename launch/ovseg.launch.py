"""Start ovseg_node (and optionally rviz).

    ros2 launch ovseg_ros ovseg.launch.py camera_topics:=/front/image_raw,/rear/image_raw \
        checkpoint:=/models/eov_seg_r50.pth classes:="person; forklift; pallet; floor" \
        things:="person; forklift; pallet" use_rviz:=true

Arguments left empty keep the values of params_file (config/ovseg.yaml by default).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

ARGUMENTS = {
    "camera_topics": ("", "comma-separated camera image topics"),
    "checkpoint": ("", "EOV-Seg checkpoint file"),
    "weights": ("", "'random' for stand-in random weights (smoke tests only)"),
    "classes": ("", "vocabulary: ';' between classes, ',' between synonyms"),
    "things": ("", "classes that are things, same syntax"),
    "device": ("", "cpu, cuda, cuda:N"),
    "compressed": ("", "true to subscribe to <topic>/compressed"),
    "namespace": ("", "namespace of the node"),
    "params_file": ("", "parameter YAML (default: the package's config/ovseg.yaml)"),
    "use_rviz": ("false", "also start rviz with config/ovseg.rviz"),
}


def _split(text, separator):
    return [item.strip() for item in text.split(separator) if item.strip()]


def _setup(context):
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    share = get_package_share_directory("ovseg_ros")
    params_file = value["params_file"] or os.path.join(share, "config", "ovseg.yaml")
    overrides = {}
    if value["camera_topics"]:
        overrides["image_topics"] = _split(value["camera_topics"], ",")
    if value["classes"]:
        overrides["classes"] = _split(value["classes"], ";")
    if value["things"]:
        overrides["things"] = _split(value["things"], ";")
    for name in ("checkpoint", "weights", "device"):
        if value[name]:
            overrides[name] = value[name]
    if value["compressed"]:
        overrides["compressed"] = value["compressed"].lower() in ("true", "1", "yes")
    actions = [
        Node(
            package="ovseg_ros",
            executable="ovseg_node",
            name="ovseg_node",
            namespace=value["namespace"],
            parameters=[params_file, overrides],
            output="screen",
            emulate_tty=True,
        )
    ]
    if value["use_rviz"].lower() in ("true", "1", "yes"):
        actions.append(
            Node(package="rviz2", executable="rviz2", arguments=["-d", os.path.join(share, "config", "ovseg.rviz")], output="screen")
        )
    return actions


def generate_launch_description():
    declared = [DeclareLaunchArgument(name, default_value=default, description=text) for name, (default, text) in ARGUMENTS.items()]
    return LaunchDescription(declared + [OpaqueFunction(function=_setup)])
