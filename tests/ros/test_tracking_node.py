"""Track ids in a live graph: two cameras, each fed a scene that slides 1 px per frame
(stand-in weights: the segments follow the picture's content, not objects), a tracker per
camera. Checked through SegmentArray and Detection2DArray: a confirmed track id stays on
the same region from frame to frame and detections carry it, the cameras' ids are their
own (the second camera's first ids do not continue the first's), and a vocabulary change
that keeps the classes keeps the ids."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from ros_graph import require_ros

require_ros()

from ros_graph import camera_info_message, image_message, launched_node, mono16, peer_node, stamp_key, wait_until  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from vision_msgs.msg import Detection2DArray  # noqa: E402

from ovseg_msgs.msg import SegmentArray  # noqa: E402
from ovseg_msgs.srv import SetVocabulary  # noqa: E402

pytestmark = pytest.mark.timeout(600)

ASSETS = Path(__file__).resolve().parents[2] / "src" / "ovseg_ros" / "assets"
CAMERAS = {"left": "/left/image_raw", "right": "/right/image_raw"}
SIZE = (48, 64)
CLASSES = ["person", "car", "tree", "road", "building"]


def scene(name: str, shift: int) -> np.ndarray:
    """The sample picture, wider than the frame, seen `shift` px further right."""
    bgr = cv2.imread(str(ASSETS / f"{name}.jpg"))
    wide = cv2.cvtColor(cv2.resize(bgr, (SIZE[1] + 40, SIZE[0]), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(wide[:, shift: shift + SIZE[1]])


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    # stand-in weights score every segment about 1 / classes: thresholds below that
    parameters = ["min_size: 0", "device: cpu", f"classes: {CLASSES}", 'things: ["person", "car", "tree"]', "track_min_hits: 2",
                  "track_high_score: 0.1", "track_low_score: 0.05", "publish_embeddings: true"]
    with launched_node(tmp_path_factory.mktemp("tracking"), parameters, ["camera_topics:=" + ",".join(CAMERAS.values())]) as launch, \
            peer_node("ovseg_tracking_peer") as peer:
        for topic in CAMERAS.values():
            assert peer.wait_for_subscribers(topic, timeout=60)
        yield launch, peer


def run(peer, camera: str, picture: str, shifts, first_sec: int) -> list[tuple]:
    """Feed frames one at a time; (segments, panoptic, detections) per frame, in order."""
    segments = peer.record(SegmentArray, f"/ovseg_node/{camera}/segments")
    panoptic = peer.record(Image, f"/ovseg_node/{camera}/panoptic")
    detections = peer.record(Detection2DArray, f"/ovseg_node/{camera}/detections")
    got = []
    for i, shift in enumerate(shifts):
        sec = first_sec + i
        deadline = time.monotonic() + 60

        def arrived(s=sec):
            return all(any(stamp_key(m.header) == (s, 0) for m in box) for box in (segments, panoptic, detections))

        while not arrived() and time.monotonic() < deadline:
            peer.publisher(CameraInfo, CAMERAS[camera].rsplit("/", 1)[0] + "/camera_info").publish(
                camera_info_message(*SIZE, sec, camera))
            peer.publisher(Image, CAMERAS[camera]).publish(image_message(scene(picture, shift), sec, camera))
            wait_until(arrived, timeout=3.0)
        assert arrived(), f"no output for {camera} frame {sec}"
        got.append(tuple(next(m for m in box if stamp_key(m.header) == (sec, 0)) for box in (segments, panoptic, detections)))
    return got


def check_identities(frames) -> set[int]:
    """A confirmed id keeps to one region (its masks overlap from frame to frame, 1 px
    apart); detections carry the things' ids. The ids seen."""
    where: dict[int, np.ndarray] = {}
    seen = set()
    for segments, panoptic, detections in frames:
        ids = mono16(panoptic)
        things = [s for s in segments.segments if s.is_thing]
        assert [d.id for d in detections.detections] == [str(s.track_id) if s.track_id else "" for s in things]
        for s in segments.segments:
            if not s.track_id:
                continue
            mask = ids == s.id
            if s.track_id in where:
                before = np.roll(where[s.track_id], -1, axis=1)  # the picture moved 1 px left in the frame
                overlap = (before & mask).sum() / max(min(before.sum(), mask.sum()), 1)
                assert overlap > 0.5, f"track {s.track_id} ({s.label}) jumped to another region: overlap {overlap:.2f}"
            where[s.track_id] = mask
            seen.add(s.track_id)
    return seen


def test_ids_hold_per_camera_and_through_a_vocabulary_change(graph):
    launch, peer = graph
    left = run(peer, "left", "street", range(8), 100)
    left_ids = check_identities(left)
    assert left_ids, "no segment was confirmed in 8 frames"
    last = {s.track_id for s in left[-1][0].segments if s.track_id}
    # a new vocabulary (version) with the same classes: the segments are the same, so must be the ids
    # (stand-in weights score classes nearly alike: another order or one more class flips labels)
    reply = peer.call(SetVocabulary, "/ovseg_node/set_vocabulary", SetVocabulary.Request(classes=CLASSES, things=["person", "car", "tree"]))
    assert reply.success, reply.message
    after = run(peer, "left", "street", range(8, 11), 108)
    assert after[0][0].vocabulary_version == reply.vocabulary_version
    check_identities(left[-1:] + after)
    kept = {s.track_id for s in after[0][0].segments if s.track_id}
    assert last <= kept, f"ids after the change {kept} vs before {last}"
    right = run(peer, "right", "street", range(20, 26), 300)  # (the warehouse gives no segment with this vocabulary)
    right_ids = check_identities(right)
    assert right_ids and min(right_ids) <= len(right[0][0].segments) + 2, \
        f"the second camera's ids {sorted(right_ids)} continue the first's {sorted(left_ids)}: not its own tracker"
    assert launch.process.poll() is None


def test_published_embeddings_give_the_nodes_classes_and_scores(graph):
    """A consumer scores the vocabulary's text against the published embeddings with the
    published ensemble (the same model's text tower: here the same stand-in weights) and
    gets the class and score the node assigned, for every segment of a frame; new text is
    scored the same way without touching the node's vocabulary."""
    from ovseg_ros.predictor import Predictor

    _, peer = graph
    frames = run(peer, "left", "street", [3], 500)
    segments = frames[0][0].segments
    assert segments
    model = Predictor.from_checkpoint(None, stand_in_weights=True, classes=CLASSES, things=["person", "car", "tree"])
    width = len(segments[0].embedding)
    assert width > 0 and all(len(s.embedding) == width and len(s.clip_embedding) in (0, width) for s in segments)
    own = np.array([s.embedding for s in segments], np.float32)
    clip = np.array([s.clip_embedding if len(s.clip_embedding) else [np.nan] * width for s in segments], np.float32)
    classes, scores = model.score_embeddings(own, clip)
    assert classes.tolist() == [s.class_index for s in segments]
    assert np.allclose(scores, [s.score for s in segments], atol=1e-4)
    other, _ = model.score_embeddings(own, clip, model.prepare_vocabulary("red car; tree; sky"))
    assert set(other.tolist()) <= {-1, 0, 1, 2}
