"""Soak: the node as launched by users (`ros2 launch ovseg_ros ovseg.launch.py`, stand-in
weights on the CPU unless --checkpoint/--device say otherwise) for N minutes, fed a
moving RGB-D scene at a camera's rate, with a vocabulary change every 30 s, an overlay
subscriber that comes and goes every 20 s, and a malformed or oversized frame every 10 s.
It samples the node's resident memory every 10 s and prints the output rate, the latency
from a frame's stamp (its publication time) to its segments' arrival (percentiles), and
the memory growth per hour (least-squares slope after the warm-up), as a table and JSON.

    . tools/ros_env.sh && .venv/bin/python benchmarks/soak_node.py --minutes 30 --json soak.json

Not a test: figures depend on the machine; the README quotes a run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ros"))

from ros_graph import (
    RELIABLE, Launch, Peer, camera_info_message, depth_message, image_message, init_rclpy, rss_mib, sliding_box_scene,
)

VOCABULARIES = (
    ["person", "forklift", "pallet", "floor", "wall"],
    ["person", "box, cardboard box", "shelf, rack", "floor"],
    ["chair", "table", "person", "wall", "ceiling", "floor"],
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=15.0, help="camera frames per second")
    parser.add_argument("--size", default="96x128", help="HxW of the frames")
    parser.add_argument("--warmup", type=float, default=120.0, help="seconds left out of the memory slope")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--log", type=Path, default=Path(tempfile.gettempdir()) / "ovseg_soak_launch.log")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))

    from ovseg_msgs.msg import SegmentArray
    from ovseg_msgs.srv import SetVocabulary
    from sensor_msgs.msg import CameraInfo, Image

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as params:
        params.write("/**:\n  ros__parameters:\n    min_size: 0\n    sync_slop: 0.02\n    max_image_pixels: 1000000\n")
    launch = Launch(["ovseg_ros", "ovseg.launch.py", "weights:=random", "device:=cpu", f"params_file:={params.name}",
                     "camera_topics:=/soak/color/image_raw", "depth_topics:=/soak/depth/image_raw"], args.log)
    init_rclpy()
    peer = Peer("ovseg_soak_peer")
    try:
        if not launch.wait_for_output("segmenting", timeout=300):
            print(launch.output[-3000:])
            return 1
        pid = launch.node_pid()
        arrivals: list[tuple[float, float]] = []  # (arrival, latency)
        lock = threading.Lock()

        def on_segments(msg) -> None:
            now = time.time()
            with lock:
                arrivals.append((now, now - (msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec)))

        # one client for the whole run, as a real caller keeps it: a client created per call
        # can miss its reply under Cyclone DDS (ros2/rmw_cyclonedds#74)
        vocabulary_client = peer.node.create_client(SetVocabulary, "/ovseg_node/set_vocabulary")
        assert vocabulary_client.wait_for_service(timeout_sec=60)

        def change_vocabulary(classes) -> None:
            done = threading.Event()
            future = vocabulary_client.call_async(SetVocabulary.Request(classes=classes, things=[]))
            future.add_done_callback(lambda _: done.set())
            if not done.wait(60):
                events["vocabulary_no_reply"] += 1
            else:
                events["vocabulary" if future.result().success else "vocabulary_refused"] += 1

        peer.node.create_subscription(SegmentArray, "/ovseg_node/soak/color/segments", on_segments, RELIABLE)
        images = peer.publisher(Image, "/soak/color/image_raw")
        infos = peer.publisher(CameraInfo, "/soak/color/camera_info")
        depths = peer.publisher(Image, "/soak/depth/image_raw")
        assert peer.wait_for_subscribers("/soak/color/image_raw", timeout=60)
        start = time.time()
        end = start + 60 * args.minutes
        memory: list[tuple[float, float]] = [(0.0, rss_mib(pid))]
        overlay, events = None, {"vocabulary": 0, "vocabulary_refused": 0, "vocabulary_no_reply": 0, "overlay_toggles": 0,
                                   "bad_frames": 0}
        next_frame, next_sample, frame = start, start + 10, 0
        rng = np.random.default_rng(0)
        while time.time() < end and launch.process.poll() is None:
            now = time.time()
            if now < next_frame:
                time.sleep(min(next_frame - now, 0.005))
                continue
            next_frame += 1 / args.rate
            frame += 1
            t = now - start
            sec, nanosec = int(now), int((now % 1) * 1e9)
            rgb, depth = sliding_box_scene(height, width, t)
            infos.publish(camera_info_message(height, width, sec, "soak_optical", nanosec))
            depths.publish(depth_message(depth, sec, "soak_optical", nanosec))
            images.publish(image_message(rgb, sec, "soak_optical", nanosec))
            if frame % int(10 * args.rate) == 0:  # a bad frame every 10 s: each kind in turn
                kind = events["bad_frames"] % 3
                bad = image_message(rgb, sec, "soak_optical", nanosec + 1)
                if kind == 0:
                    bad.encoding = "weird16"
                elif kind == 1:
                    bad.data = bad.data[: len(bad.data) // 3]
                else:
                    bad.height, bad.width, bad.step = 1200, 1200, 3600  # over max_image_pixels
                    bad.data = rng.integers(0, 255, 1200 * 3600, dtype=np.uint8).tobytes()
                images.publish(bad)
                events["bad_frames"] += 1
            if frame % int(30 * args.rate) == 0:  # a vocabulary change every 30 s (asynchronous: never blocks frames)
                classes = VOCABULARIES[(frame // int(30 * args.rate)) % len(VOCABULARIES)]
                threading.Thread(target=change_vocabulary, args=(classes,), daemon=True).start()
            if frame % int(20 * args.rate) == 0:  # the overlay subscriber comes and goes
                if overlay is None:
                    overlay = peer.node.create_subscription(Image, "/ovseg_node/soak/color/overlay", lambda m: None, RELIABLE)
                else:
                    peer.node.destroy_subscription(overlay)
                    overlay = None
                events["overlay_toggles"] += 1
            if now >= next_sample:
                memory.append((now - start, rss_mib(pid)))
                next_sample += 10
        alive = launch.process.poll() is None
        duration = time.time() - start
    finally:
        code = launch.interrupt()
        peer.close()

    with lock:
        latencies = np.array([lat for _, lat in arrivals]) * 1e3
        outputs = len(arrivals)
    t, rss = np.array(memory).T
    late = t >= args.warmup
    slope = float(np.polyfit(t[late], rss[late], 1)[0] * 3600) if late.sum() >= 3 else float("nan")
    figures = {
        "minutes": round(duration / 60, 1), "frame_rate_in_hz": args.rate, "frame_size": args.size,
        "output_rate_hz": round(outputs / duration, 2), "outputs": outputs,
        "latency_ms": {p: round(float(np.percentile(latencies, q)), 1) for p, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))}
        if outputs else {},
        "rss_mib": {"start": round(float(rss[0]), 1), "after_warmup": round(float(rss[late][0]), 1) if late.any() else None,
                    "end": round(float(rss[-1]), 1), "max": round(float(rss.max()), 1)},
        "rss_growth_mib_per_hour": round(slope, 1),
        "events": events, "node_alive_at_end": alive, "launch_exit_code": code,
    }
    rows = [("duration", f"{figures['minutes']} min"), ("frames in", f"{args.rate} Hz, {args.size}"),
            ("segments out", f"{figures['output_rate_hz']} Hz ({outputs})")]
    rows += [(f"latency {k}", f"{v} ms") for k, v in figures["latency_ms"].items()]
    vocabulary_row = f"{events['vocabulary']} ({events['vocabulary_refused']}, {events['vocabulary_no_reply']})"
    rss_row = f"{figures['rss_mib']['start']} / {figures['rss_mib']['after_warmup']} / {figures['rss_mib']['end']} MiB"
    rows += [("RSS start / after warm-up / end", rss_row), ("RSS growth", f"{figures['rss_growth_mib_per_hour']} MiB/h"),
             ("vocabulary changes (refused, no reply)", vocabulary_row), ("overlay subscriber toggles", str(events["overlay_toggles"])),
             ("bad frames sent", str(events["bad_frames"])), ("alive at end / exit code", f"{alive} / {code}")]
    width_ = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width_}}  {value}")
    print(json.dumps(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if alive and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
