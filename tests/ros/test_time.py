"""Time as robots have it: `ros2 bag play --loop` of a recorded camera + depth +
camera_info bag (stamps jump back at every loop), and a simulation's /clock
(`use_sim_time:=true`) that runs, jumps back and pauses. Outputs keep their frames'
stamps, 3D is measured on the depth image of the right frame after every jump, the
rates in /diagnostics stay sane and nothing stalls."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
from ros_graph import require_ros

require_ros()

from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from ros_graph import RELIABLE, camera_info_message, depth_message, image_message, launched_node, peer_node, stamp_key, wait_until  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from ovseg_msgs.msg import SegmentArray  # noqa: E402

pytestmark = pytest.mark.timeout(600)

HEIGHT, WIDTH = 48, 64
FRAMES, PERIOD = 8, 0.2  # the bag: 8 frames at 5 Hz
RGB = np.random.default_rng(3).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def depth_of(index: int) -> float:
    """Frame i's depth (metres): every frame its own, so a mismatch shows."""
    return 1.0 + 0.25 * index


def depth_of_frame(metres: float, sec: int, nanosec: int, frame_id: str) -> Image:
    """A depth image at one distance everywhere."""
    return depth_message(np.full((HEIGHT, WIDTH), round(metres * 1000), np.uint16), sec, frame_id, nanosec)


@pytest.fixture(scope="module")
def peer():
    with peer_node("ovseg_time_peer") as node:
        yield node


def launch_node(folder, name: str, extra: list[str]):
    return launched_node(folder, ["min_size: 0", "device: cpu", "diagnostics_period: 0.5"],
                         [f"camera_topics:=/{name}/color/image_raw", f"depth_topics:=/{name}/depth/image_raw", *extra])


def node_status(diagnostics: list) -> list[tuple[object, dict]]:
    return [(array.header, {kv.key: kv.value for kv in status.values})
            for array in list(diagnostics) for status in array.status if status.name.startswith("ovseg_node")]


def record_bag(peer, folder) -> str:
    """A camera bag recorded by `ros2 bag record`: colour, aligned depth, camera_info."""
    bag = folder / "loop_bag"
    topics = ["/loop/color/image_raw", "/loop/depth/image_raw", "/loop/color/camera_info"]
    record = subprocess.Popen(["ros2", "bag", "record", "-o", str(bag), *topics],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        publishers = [peer.publisher(t, topic, RELIABLE) for t, topic in zip((Image, Image, CameraInfo), topics)]
        assert wait_until(lambda: all(p.get_subscription_count() > 0 for p in publishers), timeout=60), "ros2 bag record did not subscribe"
        for i in range(FRAMES):
            sec, nanosec = 100 + (i * 200_000_000) // 10**9, (i * 200_000_000) % 10**9
            publishers[2].publish(camera_info_message(HEIGHT, WIDTH, sec, "loop_optical", nanosec))
            publishers[1].publish(depth_of_frame(depth_of(i), sec, nanosec, "loop_optical"))
            publishers[0].publish(image_message(RGB, sec, "loop_optical", nanosec))
            time.sleep(PERIOD)
        time.sleep(1.0)
    finally:
        os.killpg(record.pid, signal.SIGINT)
        record.wait(30)
    for publisher in publishers:
        peer.node.destroy_publisher(publisher)
    assert (bag / "metadata.yaml").is_file(), record.stdout.read().decode(errors="replace")
    return str(bag)


def test_bag_loop_keeps_stamps_and_matches_depth_after_each_jump(peer, tmp_path):
    bag = record_bag(peer, tmp_path)
    with launch_node(tmp_path, "loop", []) as launch:
        segments = peer.record(SegmentArray, "/ovseg_node/loop/color/segments")
        diagnostics = peer.record(DiagnosticArray, "/diagnostics")
        play = subprocess.Popen(["ros2", "bag", "play", "--loop", bag], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            def loops() -> int:
                stamps = [stamp_key(m.header) for m in list(segments)]
                return sum(b < a for a, b in itertools.pairwise(stamps))  # jumps back seen in the outputs

            assert wait_until(lambda: loops() >= 3, timeout=120), f"outputs over {loops()} loops only"
        finally:
            os.killpg(play.pid, signal.SIGINT)
            play.wait(30)
        index = {(100 + (i * 200_000_000) // 10**9, (i * 200_000_000) % 10**9): i for i in range(FRAMES)}
        measured = 0
        for message in list(segments):
            key = stamp_key(message.header)
            assert key in index, f"an output stamp {key} that no frame had"
            assert message.header.frame_id == "loop_optical"
            for segment in message.segments:
                if segment.depth_points:
                    assert abs(segment.center_3d.z - depth_of(index[key])) < 0.01, (key, segment.center_3d.z)
                    measured += 1
        assert measured >= 10, "too few segments were measured in 3D"
        status = node_status(diagnostics)
        assert status and float(status[-1][1]["loop/color/input_hz"]) > 0
        for _, values in status[-6:]:  # rates over wall time: near the bag's 5 Hz, never negative or huge
            assert 0 <= float(values["loop/color/input_hz"]) <= 15 and 0 <= float(values["loop/color/output_hz"]) <= 15, values
        assert int(status[-1][1]["loop/color/frames_in_3d"]) > 0
        assert launch.interrupt() == 0, launch.output[-3000:]


def test_sim_time_runs_jumps_back_and_pauses(peer, tmp_path):
    with launch_node(tmp_path, "sim", ["use_sim_time:=true"]) as launch:
        run_on_sim_time(peer, launch)


def run_on_sim_time(peer, launch) -> None:
    clock_pub = peer.publisher(Clock, "/clock", RELIABLE)
    sim = {"now": 1000.0, "running": True, "publishing": True}
    stop = threading.Event()

    def tick() -> None:  # the simulator: /clock at 50 Hz, advancing in real time while running
        while not stop.is_set():
            if sim["publishing"]:
                clock_pub.publish(Clock(clock=Time(sec=int(sim["now"]), nanosec=int((sim["now"] % 1) * 1e9))))
            time.sleep(0.02)
            if sim["running"]:
                sim["now"] += 0.02

    clock = threading.Thread(target=tick, daemon=True)
    clock.start()
    try:
        segments = peer.record(SegmentArray, "/ovseg_node/sim/color/segments")
        diagnostics = peer.record(DiagnosticArray, "/diagnostics")
        sent = set()

        def run_frames(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                now = sim["now"]
                sec, nanosec = int(now), int((now % 1) * 1e9)
                sent.add((sec, nanosec))
                peer.publisher(CameraInfo, "/sim/color/camera_info").publish(camera_info_message(HEIGHT, WIDTH, sec, "sim_optical", nanosec))
                peer.publisher(Image, "/sim/depth/image_raw").publish(depth_of_frame(2.0, sec, nanosec, "sim_optical"))
                peer.publisher(Image, "/sim/color/image_raw").publish(image_message(RGB, sec, "sim_optical", nanosec))
                time.sleep(0.2)

        assert peer.wait_for_subscribers("/sim/color/image_raw", timeout=60)
        run_frames(4.0)
        before_jump = len(segments)
        assert before_jump > 0
        sim["now"] = 1000.0  # the simulation restarts: its clock jumps back
        run_frames(4.0)
        assert wait_until(lambda: len(segments) > before_jump, timeout=20), "no output after the clock jumped back"
        assert all(stamp_key(m.header) in sent for m in segments), "an output stamp that no frame had"
        assert any(abs(s.center_3d.z - 2.0) < 0.01 for m in segments for s in m.segments if s.depth_points)

        stamps = [h.stamp.sec + 1e-9 * h.stamp.nanosec for h, _ in node_status(diagnostics)]
        assert stamps and all(s < 10_000 for s in stamps), "diagnostics are stamped with sim time, not wall time"
        assert any(b < a for a, b in itertools.pairwise(stamps)), "diagnostic stamps follow the clock back"
        sim["publishing"] = False  # the simulation pauses: no /clock at all
        count = len(node_status(diagnostics))
        assert wait_until(lambda: len(node_status(diagnostics)) >= count + 3, timeout=10), "diagnostics stalled with /clock"
        for _, values in node_status(diagnostics)[-3:]:
            assert 0 <= float(values["sim/color/output_hz"]) <= 15
    finally:
        stop.set()
        clock.join(2)
    assert launch.interrupt() == 0, launch.output[-3000:]
