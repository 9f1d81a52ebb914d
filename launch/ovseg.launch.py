"""Start ovseg_node (and optionally rviz).

    ros2 launch ovseg_ros ovseg.launch.py camera_topics:=/front/image_raw,/rear/image_raw \
        checkpoint:=/models/eov_seg_r50.pth classes:="person; forklift; pallet; floor" use_rviz:=true

Each camera topic becomes a camera named after it (/front/image_raw -> front) whose
inputs are remapped: its image, and the camera_info beside it (/front/camera_info).
Arguments left empty keep the values of params_file (config/ovseg.yaml by default).
If the node exits with an error (it cannot start, or fails), launch shuts down and
exits non-zero.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from ovseg_ros.node.cameras import camera_names, input_names, sibling_topic

ARGUMENTS = {
    "camera_topics": ("", "comma-separated camera image topics (default: the node's 'image' input, unremapped)"),
    "checkpoint": ("", "EOV-Seg or FC-CLIP checkpoint file"),
    "model": ("", "eov_seg (fast) or fc_clip (accurate); default: the checkpoint's"),
    "weights": ("", "'random' for stand-in random weights (smoke tests only)"),
    "classes": ("", "vocabulary: ';' between classes, ',' between synonyms"),
    "things": ("", "classes that are things, same syntax (default: inferred from COCO thing names)"),
    "device": ("", "auto, cpu, cuda, cuda:N"),
    "compressed": ("", "true to subscribe to <image topic>/compressed"),
    "namespace": ("", "namespace of the node"),
    "params_file": ("", "parameter YAML (default: the package's config/ovseg.yaml)"),
    "use_rviz": ("false", "also start rviz with config/ovseg.rviz"),
}


def _split(text, separator):
    return [item.strip() for item in text.split(separator) if item.strip()]


def _true(text):
    return text.lower() in ("true", "1", "yes")


def _camera_remappings(topics):
    """(camera names, remappings) for image topics, as the node names its inputs."""
    cameras = camera_names(topics)
    images, infos = input_names(cameras, "image"), input_names(cameras, "camera_info")
    remappings = []
    for camera, topic in zip(cameras, topics):
        remappings += [(images[camera], topic), (infos[camera], sibling_topic(topic, "camera_info"))]
    return cameras, remappings


def _on_node_exit(event, context):
    """The node ended: an error makes `ros2 launch` fail (the exception sets its exit code)."""
    if event.returncode != 0:
        raise RuntimeError(f"ovseg_node exited with code {event.returncode}: it could not start or failed (see its log above)")
    return [EmitEvent(event=Shutdown(reason="ovseg_node exited"))]


def _setup(context):
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    share = get_package_share_directory("ovseg_ros")
    params_file = value["params_file"] or os.path.join(share, "config", "ovseg.yaml")
    overrides, remappings = {}, []
    if value["camera_topics"]:
        cameras, remappings = _camera_remappings(_split(value["camera_topics"], ","))
        overrides["cameras"] = cameras
    if value["classes"]:
        overrides["classes"] = _split(value["classes"], ";")
    if value["things"]:
        overrides["things"] = _split(value["things"], ";")
    for name in ("checkpoint", "model", "weights", "device"):
        if value[name]:
            overrides[name] = value[name]
    if value["compressed"]:
        overrides["compressed"] = _true(value["compressed"])
    node = Node(
        package="ovseg_ros",
        executable="ovseg_node",
        name="ovseg_node",
        namespace=value["namespace"],
        parameters=[params_file, overrides],
        remappings=remappings,
        output="screen",
        emulate_tty=True,
    )
    actions = [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=_on_node_exit))]
    if _true(value["use_rviz"]):
        actions.append(
            Node(package="rviz2", executable="rviz2", arguments=["-d", os.path.join(share, "config", "ovseg.rviz")], output="screen")
        )
    return actions


def generate_launch_description():
    declared = [DeclareLaunchArgument(name, default_value=default, description=text) for name, (default, text) in ARGUMENTS.items()]
    return LaunchDescription(declared + [OpaqueFunction(function=_setup)])
