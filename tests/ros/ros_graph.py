"""Helpers for tests in a live ROS 2 graph: `ros2 launch` as a user runs it (its own
process group, so Ctrl-C can be simulated), and a peer node spinning in the background
that publishes camera frames, records topics and calls services."""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest


def require_ros() -> None:
    """Skip (with the reason) where ROS 2 is not sourced; under CI=true that is a failure:
    CI must run these tests."""
    missing = []
    for module in ("rclpy", "ovseg_msgs.msg", "launch_testing", "vision_msgs.msg"):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            missing.append(f"{module} ({exc})")
    if not missing:
        return
    reason = "ROS 2 is not sourced or ros2_ws is not built (tools/test.sh does both): missing " + ", ".join(missing)
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI must run the ROS tests: {reason}", pytrace=False)
    pytest.skip(reason=reason, allow_module_level=True)


def isolate_graph() -> str:
    """The tests publish camera frames on /front/image_raw and friends: run on a robot's
    machine, they must not join its graph. Their own DDS domain (OVSEG_TEST_ROS_DOMAIN_ID,
    else one of 60-99 picked by process id) on this host only; every process they start
    (ros2 launch, ros2 topic, ros2 bag) inherits it."""
    domain = os.environ.get("OVSEG_TEST_ROS_DOMAIN_ID") or str(60 + os.getpid() % 40)
    os.environ["ROS_DOMAIN_ID"] = domain
    os.environ["ROS_LOCALHOST_ONLY"] = "1"
    return domain


require_ros()
isolate_graph()

import rclpy  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


class Launch:
    """`ros2 launch <args>` in its own session; output captured to a file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            ["ros2", "launch", *args], stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float) -> bool:
        return bool(wait_until(lambda: text in self.output or self.process.poll() is not None, timeout)) and text in self.output

    def interrupt(self, timeout: float = 60.0) -> int:
        """Ctrl-C in a terminal: SIGINT to the whole process group; the exit code."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(timeout)
        finally:
            self.kill()

    def node_pid(self, executable: str = "ovseg_node") -> int | None:
        """The pid of the node process this launch started (its executable, in this
        launch's process group): for measuring its memory."""
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
                group = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2])
            except (OSError, ValueError, IndexError):
                continue
            if group == self.process.pid and any(part.endswith(f"/{executable}".encode()) for part in cmdline):
                return int(proc.name)
        return None

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self._log.close()


@contextlib.contextmanager
def launched_node(folder: Path, parameters: list[str], args: list[str], ready: str = "segmenting", env: dict | None = None):
    """`ros2 launch ovseg_ros ovseg.launch.py weights:=random` with a params file of these
    node parameter lines (YAML, e.g. "min_size: 0") and launch arguments, once it has
    logged `ready`; killed at the end if still running."""
    params = folder / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n" + "".join(f"    {line}\n" for line in parameters))
    launch = Launch(["ovseg_ros", "ovseg.launch.py", "weights:=random", f"params_file:={params}", *args], folder / "launch.log", env=env)
    try:
        assert launch.wait_for_output(ready, timeout=300), f"the node did not start:\n{launch.output[-3000:]}"
        yield launch
    finally:
        launch.kill()


@contextlib.contextmanager
def peer_node(name: str):
    """A Peer (rclpy initialised if needed), closed at the end."""
    init_rclpy()
    node = Peer(name)
    try:
        yield node
    finally:
        node.close()


class Peer:
    """A node of the test's own, spun by a background executor."""

    def __init__(self, name: str = "ovseg_test_peer") -> None:
        self.node = Node(name)
        self.executor = MultiThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        self._publishers: dict[str, Any] = {}

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - context shut down at the end of the tests
            pass

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()

    def record(self, msg_type, topic: str, qos: QoSProfile = RELIABLE) -> list:
        received: list = []
        self.node.create_subscription(msg_type, topic, received.append, qos)
        return received

    def publisher(self, msg_type, topic: str, qos: QoSProfile = qos_profile_sensor_data):
        key = f"{topic}:{msg_type.__name__}"
        if key not in self._publishers:
            self._publishers[key] = self.node.create_publisher(msg_type, topic, qos)
        return self._publishers[key]

    def drop_publisher(self, msg_type, topic: str) -> None:
        """Destroy a publisher (a camera driver that goes away)."""
        publisher = self._publishers.pop(f"{topic}:{msg_type.__name__}", None)
        if publisher is not None:
            self.node.destroy_publisher(publisher)

    def wait_for_subscribers(self, topic: str, count: int = 1, timeout: float = 60.0) -> bool:
        return bool(wait_until(lambda: self.node.count_subscribers(topic) >= count, timeout))

    def call(self, srv_type, name: str, request, timeout: float = 60.0):
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {name} not available")
            done = threading.Event()
            future = client.call_async(request)
            future.add_done_callback(lambda _: done.set())
            if not done.wait(timeout):
                raise TimeoutError(f"no reply from {name}")
            return future.result()
        finally:
            self.node.destroy_client(client)


def image_message(rgb: np.ndarray, sec: int, frame_id: str, nanosec: int = 0) -> Image:
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=rgb.shape[1] * 3)
    msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = sec, nanosec, frame_id
    msg.data = rgb.tobytes()
    return msg


def camera_info_message(height: int, width: int, sec: int, frame_id: str, nanosec: int = 0) -> CameraInfo:
    msg = CameraInfo(height=height, width=width, distortion_model="plumb_bob")
    msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = sec, nanosec, frame_id
    fx = fy = float(width)
    msg.k = [fx, 0.0, width / 2, 0.0, fy, height / 2, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, width / 2, 0.0, 0.0, fy, height / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
    msg.d = [0.0] * 5
    return msg


def depth_message(depth_mm: np.ndarray, sec: int, frame_id: str, nanosec: int = 0) -> Image:
    """A 16UC1 depth image (millimetres), as RealSense drivers publish it."""
    msg = Image(height=depth_mm.shape[0], width=depth_mm.shape[1], encoding="16UC1", step=depth_mm.shape[1] * 2)
    msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = sec, nanosec, frame_id
    msg.data = depth_mm.astype("<u2").tobytes()
    return msg


def sliding_box_scene(height: int, width: int, t: float) -> tuple[np.ndarray, np.ndarray]:
    """A box sliding to and fro in front of a wall over a floor, at time t (s): rgb8 and
    aligned depth in mm."""
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[:], rgb[height // 2:] = (90, 90, 110), (60, 120, 60)
    depth = np.full((height, width), 3000, np.uint16)
    depth[height // 2:] = np.linspace(2000, 800, height - height // 2).astype(np.uint16)[:, None]
    x = int((0.5 + 0.4 * np.sin(t / 3)) * (width - width // 4))
    rgb[height // 4: 3 * height // 4, x: x + width // 4] = (200, 80, 40)
    depth[height // 4: 3 * height // 4, x: x + width // 4] = 1500
    return rgb, depth


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def stamp_key(header) -> tuple[int, int]:
    return int(header.stamp.sec), int(header.stamp.nanosec)


def mono16(msg: Image) -> np.ndarray:
    assert msg.encoding == "mono16" and msg.step == msg.width * 2
    return np.frombuffer(bytes(msg.data), dtype="<u2").reshape(msg.height, msg.width)


def init_rclpy() -> None:
    if not rclpy.ok():
        rclpy.init()
