"""Start ovseg_node (and optionally rviz).

    ros2 launch ovseg_ros ovseg.launch.py camera_topics:=/front/image_raw,/rear/image_raw \
        checkpoint:=/models/eov_seg_r50.pth classes:="person; forklift; pallet; floor" use_rviz:=true

Each camera topic becomes a camera named after it (/front/image_raw -> front) whose
inputs are remapped: its image, and the camera_info beside it (/front/camera_info).
depth_topics (one per camera topic, aligned to its image) turns on segments in 3D:

    ros2 launch ovseg_ros ovseg.launch.py camera_topics:=/camera/color/image_raw \
        depth_topics:=/camera/aligned_depth_to_color/image_raw checkpoint:=/models/eov_seg_r50.pth

Arguments left empty keep the values of params_file (config/ovseg.yaml by default).
The node is a managed (lifecycle) node that configures and activates itself
(autostart:=true, the default); with autostart:=false it waits, unconfigured, for a
lifecycle manager or `ros2 lifecycle set /ovseg_node configure` (then `activate`).
If the node exits with an error (it cannot start, or fails), launch shuts down and
exits non-zero.
"""

import os
import tempfile

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from ovseg_ros.config import MODEL_HELP
from ovseg_ros.node.cameras import camera_names, input_names, sibling_topic

ARGUMENTS = {
    "camera_topics": ("", "comma-separated camera image topics (default: the node's 'image' input, unremapped)"),
    "checkpoint": ("", "EOV-Seg, FC-CLIP, SAN or SED checkpoint file"),
    "model": ("", f"{MODEL_HELP}; default: the checkpoint's"),
    "weights": ("", "'random' for stand-in random weights (smoke tests only)"),
    "classes": ("", "vocabulary: ';' between classes, ',' between synonyms"),
    "things": ("", "classes that are things, same syntax (default: inferred from COCO thing names)"),
    "device": ("", "auto, cpu, cuda, cuda:N"),
    "compressed": ("", "true to subscribe to <image topic>/compressed"),
    "depth_topics": ("", "comma-separated depth image topics aligned to the camera topics, one each: segments in 3D"),
    "namespace": ("", "namespace of the node"),
    "params_file": ("", "parameter YAML (default: the package's config/ovseg.yaml)"),
    "autostart": ("true", "configure and activate the (lifecycle) node at start; false: leave it unconfigured for a lifecycle manager or `ros2 lifecycle set`"),
    "use_sim_time": ("", "true to run on /clock (simulation, `ros2 bag play --clock`)"),
    "use_rviz": ("false", "also start rviz with config/ovseg.rviz, showing the first camera's outputs"),
    "rviz_frame": ("", "rviz's fixed frame: the camera's optical frame_id, or a frame TF connects it to (default: camera)"),
}


def _split(text, separator):
    return [item.strip() for item in text.split(separator) if item.strip()]


def _true(text):
    return text.lower() in ("true", "1", "yes")


def _camera_remappings(topics, depth_topics=()):
    """(camera names, remappings) for image topics (and their aligned depth topics), as
    the node names its inputs."""
    cameras = camera_names(topics)
    images, infos, depths = (input_names(cameras, stream) for stream in ("image", "camera_info", "depth"))
    remappings = []
    for camera, topic in zip(cameras, topics):
        remappings += [(images[camera], topic), (infos[camera], sibling_topic(topic, "camera_info"))]
    for camera, topic in zip(cameras, depth_topics):
        remappings.append((depths[camera], topic))
    return cameras, remappings


def _on_node_exit(event, context):
    """The node ended: an error makes `ros2 launch` fail (the exception sets its exit code)."""
    if event.returncode != 0:
        raise RuntimeError(f"ovseg_node exited with code {event.returncode}: it could not start or failed (see its log above)")
    return [EmitEvent(event=Shutdown(reason="ovseg_node exited"))]


def _class_count(params_file, classes):
    """How many classes the node starts with: the classes argument, else the params file's."""
    if classes:
        return len(classes)
    try:
        import yaml

        with open(params_file) as f:
            for section in (yaml.safe_load(f) or {}).values():
                found = (section or {}).get("ros__parameters", {}).get("classes")
                if found:
                    return len(found)
    except (OSError, ValueError, AttributeError):
        pass
    return 8  # the node's default vocabulary


def _rviz_config(share, node_namespace, camera, frame, num_classes=8):
    """The shipped rviz config pointed at this launch's topics: it is written for the node
    in the root namespace and a camera named 'camera', in a frame named 'camera'. The
    cloud's colour scale spans the vocabulary's class indices (fixed bounds: a class keeps
    its colour whichever classes are in view)."""
    with open(os.path.join(share, "config", "ovseg.rviz")) as f:
        text = f.read()
    text = text.replace("Max Intensity: 7", f"Max Intensity: {max(num_classes - 1, 1)}")
    prefix = "/" + "/".join(part for part in (node_namespace.strip("/"), "ovseg_node", camera) if part) + "/"
    text = text.replace("/ovseg_node/camera/", prefix)
    if frame:
        text = text.replace("Fixed Frame: camera", f"Fixed Frame: {frame}")
    out = tempfile.NamedTemporaryFile("w", prefix="ovseg_", suffix=".rviz", delete=False)
    with out:
        out.write(text)
    return out.name


def _setup(context):
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    share = get_package_share_directory("ovseg_ros")
    params_file = value["params_file"] or os.path.join(share, "config", "ovseg.yaml")
    overrides, remappings, cameras = {}, [], ["camera"]
    depth_topics = _split(value["depth_topics"], ",")
    if value["camera_topics"]:
        topics = _split(value["camera_topics"], ",")
        if depth_topics and len(depth_topics) != len(topics):
            raise ValueError(f"depth_topics names {len(depth_topics)} topic(s) for {len(topics)} camera topic(s): give one per camera")
        cameras, remappings = _camera_remappings(topics, depth_topics)
        overrides["cameras"] = cameras
    elif len(depth_topics) > 1:
        raise ValueError("depth_topics names several topics: give camera_topics as well, one per depth topic")
    elif depth_topics:
        remappings = [("depth", depth_topics[0])]
    if depth_topics:
        overrides["use_depth"] = True
    if value["classes"]:
        overrides["classes"] = _split(value["classes"], ";")
    if value["things"]:
        overrides["things"] = _split(value["things"], ";")
    for name in ("checkpoint", "model", "weights", "device"):
        if value[name]:
            overrides[name] = value[name]
    if value["compressed"]:
        overrides["compressed"] = _true(value["compressed"])
    overrides["autostart"] = _true(value["autostart"])
    if value["use_sim_time"]:
        overrides["use_sim_time"] = _true(value["use_sim_time"])
    # a plain Node action: the node drives its own lifecycle at autostart, and launch_ros'
    # LifecycleNode action in Humble fails `ros2 launch` on Ctrl-C ("Cannot shutdown a
    # ROS adapter that is not running"); managers reach its lifecycle services either way
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
        num_classes = _class_count(params_file, overrides.get("classes"))
        config = _rviz_config(share, value["namespace"], cameras[0], value["rviz_frame"], num_classes)
        actions.append(Node(package="rviz2", executable="rviz2", arguments=["-d", config], output="screen"))
    return actions


def generate_launch_description():
    declared = [DeclareLaunchArgument(name, default_value=default, description=text) for name, (default, text) in ARGUMENTS.items()]
    return LaunchDescription(declared + [OpaqueFunction(function=_setup)])
