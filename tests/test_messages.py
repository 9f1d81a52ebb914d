"""Output messages built with the real definitions (rosbags: sensor_msgs, std_msgs,
geometry_msgs, diagnostic_msgs; ours and vision_msgs from .msg files), serialised to
CDR and read back."""

from __future__ import annotations

import numpy as np
import pytest
from support import make_header

from ovseg_ros import messages
from ovseg_ros.decode import decode_image
from ovseg_ros.depth import POINT_DTYPE
from ovseg_ros.segments_3d import SegmentGeometry
from ovseg_ros.predictor import Prediction, Segment


@pytest.fixture()
def prediction():
    panoptic = np.zeros((8, 12), np.int32)
    panoptic[1:4, 2:6] = 1
    panoptic[5:8, :] = 2
    semantic = np.full((8, 12), 3, np.int32)
    semantic[0, 0] = -1
    segments = [
        Segment(1, 0, "person", True, 0.9, 12, (2, 1, 4, 3), (3.5, 2.0)),
        Segment(2, 3, "floor", False, 0.7, 36, (0, 5, 12, 3), (5.5, 6.0)),
    ]
    return Prediction(panoptic=panoptic, semantic=semantic, segments=segments, vocabulary_version=4)


def round_trip(typestore, msg):
    raw = typestore.serialize_cdr(msg, msg.__msgtype__)
    return typestore.deserialize_cdr(raw, msg.__msgtype__)


def test_label_images(typestore, prediction):
    factory = messages.RosbagsFactory(typestore)
    header = make_header(typestore)
    pan = round_trip(typestore, messages.panoptic_image(factory, header, prediction))
    assert (pan.encoding, pan.height, pan.width, pan.step, pan.is_bigendian) == ("mono16", 8, 12, 24, 0)
    assert pan.header.stamp.sec == 12 and pan.header.frame_id == "camera_optical"
    ids = np.frombuffer(pan.data.tobytes(), "<u2").reshape(8, 12)
    np.testing.assert_array_equal(ids, prediction.panoptic)
    sem = round_trip(typestore, messages.semantic_image(factory, header, prediction))
    labels = np.frombuffer(sem.data.tobytes(), "<u2").reshape(8, 12)
    assert labels[0, 0] == messages.SEMANTIC_NONE and labels[1, 1] == 3


def test_segment_array(typestore, prediction):
    factory = messages.RosbagsFactory(typestore)
    msg = round_trip(typestore, messages.segment_array(factory, make_header(typestore), prediction))
    assert msg.vocabulary_version == 4 and len(msg.segments) == 2
    person = msg.segments[0]
    assert (person.id, person.class_index, person.label, person.is_thing, person.area) == (1, 0, "person", True, 12)
    assert (person.bbox.x_offset, person.bbox.y_offset, person.bbox.width, person.bbox.height) == (2, 1, 4, 3)
    assert person.score == pytest.approx(0.9) and (person.centroid.x, person.centroid.y) == (3.5, 2.0)
    assert person.depth_points == 0 and np.isnan([person.center_3d.z, person.size_3d.x]).all()  # no depth: NaN, 0 points


@pytest.fixture()
def geometry():
    """Segment 1 measured (a box 2 m ahead), segment 2 without valid depth."""
    return SegmentGeometry(
        center=np.array([[0.1, -0.2, 2.0], [np.nan] * 3], np.float32),
        size=np.array([[0.4, 0.5, 0.3], [np.nan] * 3], np.float32),
        points=np.array([640, 0]),
    )


def test_segments_and_detections_in_3d(typestore, prediction, geometry):
    factory = messages.RosbagsFactory(typestore)
    header = make_header(typestore)
    segments = round_trip(typestore, messages.segment_array(factory, header, prediction, geometry)).segments
    assert segments[0].depth_points == 640 and segments[0].center_3d.z == pytest.approx(2.0)
    assert (segments[0].size_3d.x, segments[0].size_3d.y) == pytest.approx((0.4, 0.5))
    assert segments[1].depth_points == 0 and np.isnan(segments[1].center_3d.x)
    msg = round_trip(typestore, messages.detection3d_array(factory, header, prediction, geometry))
    assert msg.__msgtype__ == "vision_msgs/msg/Detection3DArray" and len(msg.detections) == 1  # things with depth only
    det = msg.detections[0]
    assert det.id == "1" and det.results[0].hypothesis.class_id == "person" and det.header.frame_id == "camera_optical"
    assert (det.bbox.center.position.x, det.bbox.center.position.z, det.bbox.size.z) == pytest.approx((0.1, 2.0, 0.3))
    assert det.bbox.center.orientation.w == 1.0 and det.results[0].pose.pose.position.z == pytest.approx(2.0)


def test_point_cloud2_layout(typestore):
    factory = messages.RosbagsFactory(typestore)
    cloud = np.zeros(3, POINT_DTYPE)
    cloud["x"], cloud["z"], cloud["class_index"], cloud["segment_id"] = [1, 2, 3], 2.5, [0, 4, 65535], [1, 1, 0]
    cloud["rgb"] = np.array([0xFF0000, 0x00FF00, 0x0000FF], np.uint32).view(np.float32)
    msg = round_trip(typestore, messages.point_cloud2(factory, make_header(typestore), cloud))
    assert (msg.height, msg.width, msg.point_step, msg.row_step, msg.is_bigendian, msg.is_dense) == (1, 3, 24, 72, False, True)
    fields = {f.name: (f.offset, f.datatype, f.count) for f in msg.fields}
    assert fields == {"x": (0, 7, 1), "y": (4, 7, 1), "z": (8, 7, 1), "rgb": (12, 7, 1),
                      "class_index": (16, 4, 1), "segment_id": (20, 6, 1)}
    back = np.frombuffer(msg.data.tobytes(), POINT_DTYPE)
    assert back["x"].tolist() == [1, 2, 3] and back["class_index"].tolist() == [0, 4, 65535]
    assert back["rgb"].view(np.uint32).tolist() == [0xFF0000, 0x00FF00, 0x0000FF]


def test_detections_only_things(typestore, prediction):
    factory = messages.RosbagsFactory(typestore)
    msg = round_trip(typestore, messages.detection_array(factory, make_header(typestore), prediction))
    assert len(msg.detections) == 1
    det = msg.detections[0]
    assert det.id == "1" and det.results[0].hypothesis.class_id == "person"
    assert det.results[0].hypothesis.score == pytest.approx(0.9)
    assert (det.bbox.center.position.x, det.bbox.center.position.y, det.bbox.size_x, det.bbox.size_y) == (4.0, 2.5, 4.0, 3.0)
    assert det.header.stamp.nanosec == 345


def test_label_info_and_diagnostics(typestore):
    factory = messages.RosbagsFactory(typestore)
    info = round_trip(typestore, messages.label_info(factory, make_header(typestore), ["person", "floor"]))
    assert [(c.class_id, c.class_name) for c in info.class_map] == [(0, "person"), (1, "floor")]
    diag = round_trip(
        typestore, messages.diagnostic_array(factory, make_header(typestore), "ovseg", 1, "slow", {"fps": "3.0"}, "cuda")
    )
    status = diag.status[0]
    assert (status.level, status.name, status.message, status.values[0].key) == (1, "ovseg", "slow", "fps")


def test_overlay_image_decodes_back(typestore):
    factory = messages.RosbagsFactory(typestore)
    rgb = np.random.default_rng(0).integers(0, 255, size=(5, 7, 3), dtype=np.uint8)
    msg = round_trip(typestore, messages.image(factory, make_header(typestore), rgb, "rgb8"))
    np.testing.assert_array_equal(decode_image(msg), rgb)


def test_service_definitions_build_and_serialise():
    """Both halves of each .srv use only known types and survive a CDR round trip."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    from ovseg_ros.interfaces import SOURCE_MSG_DIR

    store = get_typestore(Stores.ROS2_HUMBLE)
    paths = sorted((SOURCE_MSG_DIR / "srv").glob("*.srv"))
    assert {p.stem for p in paths} == {"SetVocabulary", "GetVocabulary"}
    for path in paths:
        request, response = path.read_text().split("---")
        store.register(get_types_from_msg(request, f"ovseg_msgs/msg/{path.stem}_Request"))
        store.register(get_types_from_msg(response, f"ovseg_msgs/msg/{path.stem}_Response"))
    Set = store.types["ovseg_msgs/msg/SetVocabulary_Request"]
    req = Set(classes=["person", "car, automobile"], things=["person"])
    back = store.deserialize_cdr(store.serialize_cdr(req, Set.__msgtype__), Set.__msgtype__)
    assert back.classes == ["person", "car, automobile"] and back.things == ["person"]
    Reply = store.types["ovseg_msgs/msg/SetVocabulary_Response"]
    rep = Reply(success=False, message="refused", vocabulary_version=3)
    assert store.deserialize_cdr(store.serialize_cdr(rep, Reply.__msgtype__), Reply.__msgtype__).vocabulary_version == 3


def test_track_ids_in_segments_and_detections(typestore, prediction, geometry):
    """With tracking, Segment.track_id carries the identity and detections use it as
    their id ("" while unconfirmed: vision_msgs allows an empty id)."""
    factory = messages.RosbagsFactory(typestore)
    header = make_header(typestore)
    tracks = [7, 0] + [0] * (len(prediction.segments) - 2)
    segments = round_trip(typestore, messages.segment_array(factory, header, prediction, geometry, tracks)).segments
    assert [s.track_id for s in segments] == tracks
    assert round_trip(typestore, messages.segment_array(factory, header, prediction)).segments[0].track_id == 0
    assert round_trip(typestore, messages.detection_array(factory, header, prediction, tracks)).detections[0].id == "7"
    assert round_trip(typestore, messages.detection3d_array(factory, header, prediction, geometry, tracks)).detections[0].id == "7"
    assert round_trip(typestore, messages.detection_array(factory, header, prediction, [0] * len(tracks))).detections[0].id == ""
