"""A node that cannot start says why, exits non-zero, and `ros2 launch` exits non-zero
too (so scripts and supervisors notice); the cheap checks come before the model is built."""

from __future__ import annotations

import time

import pytest
import torch
from ros_graph import require_ros

require_ros()

from ros_graph import Launch  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def run_to_exit(args: list[str], log_path, timeout: float = 120.0) -> tuple[int, str, float]:
    start = time.monotonic()
    launch = Launch(["ovseg_ros", "ovseg.launch.py", *args], log_path)
    try:
        code = launch.process.wait(timeout)
    finally:
        launch.kill()
    return code, launch.output, time.monotonic() - start


@pytest.mark.parametrize(
    "args, reason",
    [
        (["checkpoint:=/nonexistent/eov_seg_r50.pth"], "checkpoint not found: /nonexistent/eov_seg_r50.pth"),
        ([], "parameter 'checkpoint' is empty"),
        (["weights:=random", "classes:=person; person"], "appears in classes 0 and 1"),
        (["weights:=random", "things:=forklift", "classes:=person; car"], "thing 'forklift' is not one of the classes"),
    ],
)
def test_cannot_start_exits_non_zero(args, reason, tmp_path):
    code, log, seconds = run_to_exit(args, tmp_path / "launch.log")
    assert code != 0, log
    assert "cannot start" in log and reason in log, log
    assert "ovseg_node exited with code 1" in log
    assert "Traceback" not in log


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: device cuda would start")
def test_cuda_requested_without_cuda(tmp_path):
    code, log, _ = run_to_exit(["weights:=random", "device:=cuda"], tmp_path / "launch.log")
    assert code != 0 and "CUDA is not available here" in log, log


def test_depth_topics_must_match_the_cameras(tmp_path):
    code, log, seconds = run_to_exit(
        ["weights:=random", "camera_topics:=/a/image_raw,/b/image_raw", "depth_topics:=/a/depth"], tmp_path / "launch.log"
    )
    assert code != 0 and "depth_topics names 1 topic(s) for 2 camera topic(s)" in log, log
    assert seconds < 60  # refused by the launch file itself: no model is built


def test_rviz_config_follows_the_launch(tmp_path):
    """use_rviz shows the first camera's outputs of this launch, in the frame given."""
    import importlib.util

    import yaml
    from ament_index_python.packages import get_package_share_directory

    share = get_package_share_directory("ovseg_ros")
    spec = importlib.util.spec_from_file_location("ovseg_launch", f"{share}/launch/ovseg.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = yaml.safe_load(open(module._rviz_config(share, "robot1", "front", "front_optical", num_classes=5)))
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "front_optical"
    topics = {d["Name"]: d["Topic"]["Value"] for d in manager["Displays"]}
    assert topics["Points by class"] == "/robot1/ovseg_node/front/points"
    assert topics["3D boxes"] == "/robot1/ovseg_node/front/detections_3d"
    assert topics["Overlay"] == "/robot1/ovseg_node/front/overlay"
    cloud = next(d for d in manager["Displays"] if d["Name"] == "Points by class")
    assert cloud["Max Intensity"] == 4  # class indices 0..4 of a 5-class vocabulary
    assert module._class_count(f"{share}/config/ovseg.yaml", None) == 8 and module._class_count("/nonexistent", ["a", "b"]) == 2
