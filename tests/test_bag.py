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
        assert {d.id for d in det.detections} == {str(s.id) for s in seg.segments if s.is_thing and s.area}


def test_bag_refuses_unknown_topic_and_existing_output(input_bag, tmp_path, capsys):
    args = ["bag", str(input_bag), "--weights", "random", "--min-size", "0", "--vision-msgs", str(VISION)]
    assert main(args + ["--topic", "/nope", "--out", str(tmp_path / "o1")]) == 2
    assert "/front/image_raw" in capsys.readouterr().err  # the message lists what is there
    (tmp_path / "o2").mkdir()
    assert main(args + ["--topic", "/front/image_raw", "--out", str(tmp_path / "o2")]) == 2
    assert "exists" in capsys.readouterr().err
