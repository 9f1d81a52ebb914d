"""`ovseg bag` end to end: a synthetic rosbag2 in, the node's topics out, read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import make_header

from ovseg_ros.cli import main

VISION = Path(__file__).resolve().parents[2] / "shared" / "ros_interfaces" / "vision_msgs"
STAMPS = [(10, 0), (10, 500_000_000), (11, 0)]


@pytest.fixture()
def input_bag(tmp_path, typestore):
    from rosbags.rosbag2 import Writer

    path = tmp_path / "in_bag"
    rng = np.random.default_rng(0)
    Image = typestore.types["sensor_msgs/msg/Image"]
    with Writer(path, version=8) as writer:
        conn = writer.add_connection("/front/image_raw", Image.__msgtype__, typestore=typestore)
        for i, (sec, nanosec) in enumerate(STAMPS):
            rgb = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
            msg = Image(header=make_header(typestore, sec, nanosec), height=48, width=64, encoding="rgb8",
                        is_bigendian=0, step=64 * 3, data=rgb.reshape(-1))
            if i == 1:
                msg.data = msg.data[:100]  # a truncated frame: dropped, the rest goes on
            writer.write(conn, sec * 10**9 + nanosec, typestore.serialize_cdr(msg, Image.__msgtype__))
    return path


def read_bag(path, typestore):
    from rosbags.rosbag2 import Reader

    out: dict[str, list] = {}
    with Reader(path) as reader:
        for conn, _, raw in reader.messages():
            out.setdefault(conn.topic, []).append(typestore.deserialize_cdr(raw, conn.msgtype))
    return out


def test_bag_round_trip(input_bag, tmp_path, typestore, capsys):
    out_path = tmp_path / "out_bag"
    code = main([
        "bag", str(input_bag), "--topic", "/front/image_raw", "--out", str(out_path), "--weights", "random",
        "--min-size", "0", "--overlay", "--vision-msgs", str(VISION),
        "--classes", "person; forklift; floor; wall", "--things", "person; forklift",
    ])
    captured = capsys.readouterr()
    assert code == 1, captured.err  # one frame is truncated: written are the others, the exit code says so
    assert "2/3 frames segmented (1 dropped)" in captured.out
    topics = read_bag(out_path, typestore)
    base = "/ovseg_node/front"
    assert len(topics["/front/image_raw"]) == 3  # input copied
    good_stamps = [STAMPS[0], STAMPS[2]]
    for name in ("panoptic", "semantic", "segments", "detections", "overlay"):
        stamps = [(m.header.stamp.sec, m.header.stamp.nanosec) for m in topics[f"{base}/{name}"]]
        assert stamps == good_stamps, name
    assert [c.class_name for c in topics["/ovseg_node/label_info"][0].class_map] == ["person", "forklift", "floor", "wall"]
    for pan, seg, det in zip(topics[f"{base}/panoptic"], topics[f"{base}/segments"], topics[f"{base}/detections"]):
        ids = np.frombuffer(pan.data.tobytes(), "<u2").reshape(pan.height, pan.width)
        assert pan.encoding == "mono16" and ids.shape == (48, 64)
        listed = {s.id: s for s in seg.segments}
        assert set(np.unique(ids).tolist()) - {0} <= set(listed)
        for s in seg.segments:
            assert s.area == int((ids == s.id).sum())
        assert [d.id for d in det.detections] == [str(s.track_id) if s.track_id else "" for s in seg.segments if s.is_thing and s.area]


def test_bag_refuses_unknown_topic_and_existing_output(input_bag, tmp_path, capsys):
    args = ["bag", str(input_bag), "--weights", "random", "--min-size", "0", "--vision-msgs", str(VISION)]
    assert main(args + ["--topic", "/nope", "--out", str(tmp_path / "o1")]) == 2
    assert "/front/image_raw" in capsys.readouterr().err  # the message lists what is there
    (tmp_path / "o2").mkdir()
    assert main(args + ["--topic", "/front/image_raw", "--out", str(tmp_path / "o2")]) == 2
    assert "exists" in capsys.readouterr().err


@pytest.fixture()
def rgbd_bag(tmp_path, typestore):
    """Colour frames, their aligned depth (a plane 1.5 m away) and camera_info; each
    depth image is recorded 30 ms after its colour frame, as drivers often do."""
    from rosbags.rosbag2 import Writer
    from support import make_camera_info

    path = tmp_path / "rgbd_bag"
    rng = np.random.default_rng(1)
    types = typestore.types
    Image, CameraInfo = types["sensor_msgs/msg/Image"], types["sensor_msgs/msg/CameraInfo"]
    with Writer(path, version=8) as writer:
        colour = writer.add_connection("/cam/color/image_raw", Image.__msgtype__, typestore=typestore)
        info = writer.add_connection("/cam/color/camera_info", CameraInfo.__msgtype__, typestore=typestore)
        depth = writer.add_connection("/cam/aligned_depth_to_color/image_raw", Image.__msgtype__, typestore=typestore)
        for sec in (20, 21):
            header = make_header(typestore, sec, 0)
            rgb = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)  # stand-in weights find segments in noise
            msgs = [
                (colour, 0, Image(header=header, height=48, width=64, encoding="rgb8", is_bigendian=0, step=64 * 3, data=rgb.reshape(-1))),
                (info, 1, make_camera_info(typestore, header, 48, 64)),
                (depth, 30, Image(header=header, height=48, width=64, encoding="16UC1", is_bigendian=0, step=64 * 2,
                                  data=np.full((48, 64), 1500, "<u2").reshape(-1).view(np.uint8))),
            ]
            for conn, delay_ms, msg in msgs:
                writer.write(conn, sec * 10**9 + delay_ms * 10**6, typestore.serialize_cdr(msg, msg.__msgtype__))
    return path


def test_bag_with_depth_writes_segments_in_3d(rgbd_bag, tmp_path, typestore, capsys):
    out_path = tmp_path / "out3d"
    code = main([
        "bag", str(rgbd_bag), "--topic", "/cam/color/image_raw", "--depth-topic", "/cam/aligned_depth_to_color/image_raw",
        "--points", "--out", str(out_path), "--weights", "random", "--min-size", "0", "--vision-msgs", str(VISION),
        "--classes", "person; box; floor", "--things", "person; box",
    ])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "2/2 frames segmented (0 dropped, 2 in 3D)" in captured.out
    topics = read_bag(out_path, typestore)
    base = "/ovseg_node/cam/color"  # the camera is named after its image topic
    assert len(topics["/cam/aligned_depth_to_color/image_raw"]) == 2  # inputs copied, depth included
    for seg, det, cloud in zip(topics[f"{base}/segments"], topics[f"{base}/detections_3d"], topics[f"{base}/points"]):
        measured = [s for s in seg.segments if s.depth_points > 0]
        assert measured and all(abs(s.center_3d.z - 1.5) < 1e-3 for s in measured)
        assert {d.id for d in det.detections} == {str(s.track_id) if s.track_id else "" for s in measured if s.is_thing}
        assert cloud.width == 24 * 32 and cloud.header == seg.header  # decimation 2
    assert len(topics[f"{base}/camera_info"]) == 2


def test_bag_depth_arguments_are_checked_before_the_model(rgbd_bag, tmp_path, capsys):
    args = ["bag", str(rgbd_bag), "--topic", "/cam/color/image_raw", "--out", str(tmp_path / "o"), "--weights", "random"]
    assert main(args + ["--depth-topic", "/cam/color/camera_info"]) == 2
    assert "not sensor_msgs/msg/Image" in capsys.readouterr().err
    assert main(args + ["--depth-topic", "/cam/aligned_depth_to_color/image_raw", "--depth-topic", "/x"]) == 2
    assert "one per --topic" in capsys.readouterr().err
    assert main(args + ["--points"]) == 2
    assert "--points needs --depth-topic" in capsys.readouterr().err
