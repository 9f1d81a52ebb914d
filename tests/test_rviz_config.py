"""The shipped rviz config (rviz cannot run here): it parses, every display is a class
rviz2 or vision_msgs_rviz_plugins provides, shows a topic the node publishes (for the
camera named 'camera'), and the point cloud is coloured by a field the cloud has."""

from __future__ import annotations

from pathlib import Path

import yaml

from ovseg_ros.depth import POINT_FIELDS

CONFIG = Path(__file__).resolve().parents[1] / "config" / "ovseg.rviz"
# display classes as registered in rviz_default_plugins' and vision_msgs_rviz_plugins' plugin descriptions
KNOWN = {"rviz_default_plugins/Image", "rviz_default_plugins/PointCloud2", "vision_msgs_rviz_plugins/Detection3DArray"}
OUTPUTS = {"overlay", "panoptic", "semantic", "points", "detections_3d"}


def test_displays_show_node_outputs():
    config = yaml.safe_load(CONFIG.read_text())
    displays = config["Visualization Manager"]["Displays"]
    assert {d["Class"] for d in displays} <= KNOWN
    for display in displays:
        topic = display["Topic"]["Value"]
        assert topic.startswith("/ovseg_node/camera/") and topic.rsplit("/", 1)[1] in OUTPUTS, topic
        assert display["Topic"]["Reliability Policy"] == "Reliable"  # the node's outputs are reliable
    cloud = next(d for d in displays if d["Class"] == "rviz_default_plugins/PointCloud2")
    assert cloud["Color Transformer"] == "Intensity" and cloud["Channel Name"] in {f[0] for f in POINT_FIELDS}
    assert cloud["Channel Name"] == "class_index" and cloud["Use rainbow"] is True
    assert next(d for d in displays if d["Class"].endswith("Detection3DArray"))["Enabled"] is True


def test_displays_rviz_enables_anyway_are_enabled_and_the_cloud_keeps_class_colours():
    """Seen in the real rviz2: an Image display whose panel is docked is enabled at start
    whatever the file says, so the file says so too; and with autocomputed intensity
    bounds a class's colour changes with the classes in view, so the bounds are fixed
    (the launch file sets the top to the vocabulary's last class index)."""
    config = yaml.safe_load(CONFIG.read_text())
    displays = config["Visualization Manager"]["Displays"]
    assert all(d["Enabled"] and d["Value"] for d in displays if d["Class"] == "rviz_default_plugins/Image")
    cloud = next(d for d in displays if d["Class"] == "rviz_default_plugins/PointCloud2")
    assert cloud["Autocompute Intensity Bounds"] is False and cloud["Min Intensity"] == 0
