"""SegmentTracker: identities across frames (ROS-free), on hand-made frames for each rule
and on the generated sequences (tests/tracking_scenes.py, seeds 100-104: not those the
tracker was tuned on, nor the benchmark's) scored with TrackEval."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg_ros.predictor import Prediction, Segment
from ovseg_ros.tracking import SegmentTracker, TrackerConfig
from tracking_scenes import make_sequence, score, track


def frame(objects, version: int = 1, shape=(120, 160)) -> Prediction:
    """objects: (x, y, w, h, label, is_thing, score) boxes, drawn in order."""
    panoptic = np.zeros(shape, np.int32)
    segments = []
    for i, (x, y, w, h, label, is_thing, score_) in enumerate(objects, 1):
        panoptic[max(y, 0): y + h, max(x, 0): x + w] = i
        segments.append(Segment(i, 0, label, is_thing, score_, w * h, (max(x, 0), max(y, 0), w, h), (x + w / 2, y + h / 2)))
    return Prediction(panoptic, np.zeros(shape, np.int32), segments, vocabulary_version=version)


def box(x, y, label="box", score_=0.9, w=20, h=20):
    return (x, y, w, h, label, True, score_)


def test_ids_come_once_confirmed_and_stay_in_segment_order():
    tracker = SegmentTracker(TrackerConfig(min_hits=3))
    seen = [tracker.update(frame([box(10 + 2 * t, 10), box(100 - 2 * t, 60, "person")]), t / 10) for t in range(6)]
    assert seen[0] == [0, 0] and seen[1] == [0, 0], "not confirmed before min_hits"
    assert seen[2][0] > 0 and seen[2][1] > 0 and seen[2][0] != seen[2][1]
    assert all(s == seen[2] for s in seen[3:])
    flipped = frame([box(100 - 12, 60, "person"), box(10 + 12, 10)])  # same objects, segments listed the other way
    assert tracker.update(flipped, 0.6) == seen[2][::-1]


def test_stuff_keeps_one_id_while_in_view():
    tracker = SegmentTracker()
    floor = (0, 90, 160, 30, "floor", False, 0.9)
    ids = [tracker.update(frame([floor, box(10, 10)]), t / 10)[0] for t in range(5)]
    assert ids[0] > 0 and len(set(ids)) == 1
    tracker.update(frame([box(10, 10)]), 1.0)
    assert tracker.update(frame([floor]), 1.2)[0] == ids[0]  # away 0.8 s: still it
    assert tracker.update(frame([floor]), 4.0)[0] != ids[0]  # away longer than max_lost_seconds: a new one


def test_short_occlusions_and_dropped_frames_keep_the_id_long_ones_do_not():
    tracker = SegmentTracker(TrackerConfig(max_lost_seconds=1.0))
    for t in range(5):
        ident = tracker.update(frame([box(10 + 5 * t, 40)]), t / 10)[0]
    # hidden 0.6 s while it moves on at 50 px/s: found again where the motion prior puts it
    assert tracker.update(frame([box(10 + 5 * 10, 40)]), 1.0)[0] == ident
    # frames dropped: 0.4 s, 20 px, in one step
    assert tracker.update(frame([box(10 + 5 * 14, 40)]), 1.4)[0] == ident
    # hidden 2 s: gone, the object comes back with a new id once confirmed again
    later = [tracker.update(frame([box(10, 40)]), 3.4 + t / 10)[0] for t in range(4)]
    assert later[-1] not in (0, ident)


def test_vocabulary_change_keeps_ids_of_classes_that_survive():
    tracker = SegmentTracker()
    objects = [box(10, 10, "person"), box(80, 50, "pallet")]
    for t in range(4):
        before = tracker.update(frame(objects, version=1), t / 10)
    after = tracker.update(frame([box(10, 10, "person"), box(80, 50, "crate")], version=2), 0.4)
    assert after[0] == before[0], "a class that survives the change keeps its ids"
    assert after[1] != before[1], "after a change a new class does not inherit another class's id"
    flip = tracker.update(frame([box(10, 10, "person"), box(80, 50, "box")], version=2), 0.5)
    assert flip[0] == before[0]


def test_label_flip_within_a_vocabulary_keeps_the_id():
    tracker = SegmentTracker()
    for t in range(4):
        ident = tracker.update(frame([box(30, 30, "pallet")]), t / 10)[0]
    assert tracker.update(frame([box(31, 30, "box")]), 0.4)[0] == ident


def test_a_class_change_needs_agreeing_embeddings():
    """A flip between similar classes keeps the id where the embeddings agree; a segment
    of another class that looks otherwise never takes the track over."""
    look, other = np.eye(8)[0], np.eye(8)[1]
    tracker = SegmentTracker()
    for t in range(4):
        ident = tracker.update(frame([box(30, 30, "pallet")]), t / 10, embeddings=np.array([look]))[0]
    assert tracker.update(frame([box(31, 30, "box")]), 0.4, embeddings=np.array([look + 0.01 * other]))[0] == ident
    assert tracker.update(frame([box(32, 30, "person")]), 0.5, embeddings=np.array([other]))[0] != ident


def test_time_going_back_starts_afresh():
    tracker = SegmentTracker()
    for t in range(4):
        ident = tracker.update(frame([box(30, 30)]), 10 + t / 10)[0]
    assert tracker.update(frame([box(30, 30)]), 0.0)[0] == 0  # a bag loop: new, unconfirmed
    assert ident > 0


def test_bad_configs_are_refused():
    with pytest.raises(ValueError):
        TrackerConfig(low_score=0.6, high_score=0.5)
    with pytest.raises(ValueError):
        TrackerConfig(min_hits=0)


def metrics(**options):
    rows = [score(s, track(s, SegmentTracker())) for s in (make_sequence(seed, **options) for seed in range(100, 105))]
    return {
        "IDF1": float(np.mean([r["IDF1"] for r in rows])),
        "HOTA": float(np.mean([r["HOTA"] for r in rows])),
        "IDSW_per_track": sum(r["IDSW"] for r in rows) / sum(r["tracks"] for r in rows),
    }


@pytest.mark.parametrize("options, idf1, hota, switches", [
    # floors of today's tracker (measured on these seeds: IDF1 / HOTA / switches per track 0.982 / 0.966 / 0.10;
    # 0.876 / 0.737 / 0.35; 0.647 / 0.573 / 0.90); issue 18 asks IDF1 >= 0.9 and < 0.1 switches per
    # track on the noisy sequences without long occlusions: not met yet
    ({"noise": False}, 0.95, 0.93, 0.2),
    ({"noise": True}, 0.84, 0.70, 0.5),
    ({"noise": True, "max_hidden": 2.5}, 0.58, 0.52, 1.3),
], ids=["clean", "noisy", "noisy-long-occlusions"])
def test_generated_sequences_meet_their_floors(options, idf1, hota, switches):
    got = metrics(**options)
    assert got["IDF1"] >= idf1 and got["HOTA"] >= hota and got["IDSW_per_track"] <= switches, got


def test_no_id_is_given_twice_in_a_frame():
    """Each pass assigns only the tracks no earlier pass took (two segments once shared a
    track's id when a low-score pass saw the tracks still free before the high-score one)."""
    for options in ({"noise": True}, {"noise": True, "max_hidden": 2.5}):
        sequence = make_sequence(105, **options)
        tracker = SegmentTracker()
        for prediction, stamp, embeddings in zip(sequence.predictions, sequence.stamps, sequence.embeddings):
            ids = [i for i in tracker.update(prediction, stamp, embeddings) if i]
            assert len(ids) == len(set(ids)), ids


def test_overlay_colours_follow_the_track_not_the_segment_number():
    from ovseg_ros.visualize import segment_palette

    a = [Segment(1, 0, "box", True, 0.9, 10, (0, 0, 2, 5), (1, 2)), Segment(2, 0, "box", True, 0.9, 10, (4, 0, 2, 5), (5, 2))]
    b = [Segment(1, 0, "box", True, 0.9, 10, (4, 0, 2, 5), (5, 2)), Segment(2, 0, "box", True, 0.9, 10, (0, 0, 2, 5), (1, 2))]
    first, second = segment_palette(a, 1, track_ids=[5, 9]), segment_palette(b, 1, track_ids=[9, 5])
    assert (first[1] == second[2]).all() and (first[2] == second[1]).all()  # renumbered segments, same colours
    assert not (first[1] == first[2]).all()
