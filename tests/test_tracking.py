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
    # measured on these seeds (IDF1 / HOTA / switches per track): 0.992 / 0.985 / 0.00; 0.906 / 0.772 /
    # 0.025; 0.811 / 0.704 / 0.35. The noisy floor is issue 18's: IDF1 >= 0.9 and under 0.1 switches per
    # track on the sequences without long occlusions (an oracle that knows every segment's object
    # scores IDF1 0.93 there: misses and split masks cost the rest)
    ({"noise": False}, 0.98, 0.97, 0.05),
    ({"noise": True}, 0.90, 0.75, 0.1),
    ({"noise": True, "max_hidden": 2.5}, 0.78, 0.68, 0.45),
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


def test_a_look_alike_never_continues_a_track():
    """Where both have embeddings, a segment that looks otherwise does not take a track
    over, even of its own class and on the same spot (two people crossing)."""
    look, other = np.eye(8)[0], np.eye(8)[1]
    tracker = SegmentTracker()
    for t in range(4):
        ident = tracker.update(frame([box(30, 30, "person")]), t / 10, embeddings=np.array([look]))[0]
    assert tracker.update(frame([box(31, 30, "person")]), 0.4, embeddings=np.array([other]))[0] != ident
    assert tracker.update(frame([box(32, 30, "person")]), 0.5, embeddings=np.array([look]))[0] == ident


def test_a_low_score_segment_finds_its_lost_track_by_its_looks():
    """An object coming out from behind something scores low (half hidden): it gets its id
    back where its embedding agrees, and not where it looks otherwise."""
    look, other = np.eye(8)[0], np.eye(8)[1]
    for embedding, keeps in ((look, True), (other, False)):
        tracker = SegmentTracker()
        for t in range(4):
            ident = tracker.update(frame([box(10 + 5 * t, 40)]), t / 10, embeddings=np.array([look]))[0]
        for t in range(4, 9):  # hidden 0.5 s behind a pillar at x 40-75
            tracker.update(frame([]), t / 10)
        # it comes out on the far side, half seen
        got = tracker.update(frame([box(76, 40, score_=0.3, w=10)]), 0.9, embeddings=np.array([embedding]))[0]
        assert (got == ident) is keeps, (got, ident)


def test_a_piece_of_a_split_mask_starts_no_track_after_a_missed_frame():
    """The segmenter missed the object one frame, then split it in two: the second piece
    lies inside the track's predicted box (its last mask is two frames old) and is a piece
    of it, not a new object."""
    tracker = SegmentTracker()
    look = np.eye(8)[:1]
    for t in range(4):
        ident = tracker.update(frame([box(10 + 4 * t, 40, w=40)]), t / 10, embeddings=look)[0]
    tracker.update(frame([]), 0.4)
    seen = set()
    for t in range(5, 8):
        x = 10 + 4 * t
        pieces = frame([box(x, 40, w=20), box(x + 20, 40, score_=0.8, w=20)])
        seen.update(tracker.update(pieces, t / 10, embeddings=np.repeat(look, 2, axis=0)))
    assert seen <= {ident, 0}, seen
    assert tracker.update(frame([box(10 + 4 * 8, 40, w=40)]), 0.8, embeddings=look)[0] == ident


def test_an_object_turning_back_at_the_border_keeps_its_id():
    """It left the image to the right (its last velocity points out) and comes back: the
    sliver at the border overlaps where it was last seen."""
    tracker = SegmentTracker(TrackerConfig(max_lost_seconds=1.0))
    xs = [100, 110, 120, 130, 140, 150, 155, 158, 156, 150, 142]  # 160 wide image: out to 2 px, back
    ids = []
    for t, x in enumerate(xs):
        w = min(20, 160 - x)
        ids.append(tracker.update(frame([box(x, 40, w=w)]), t / 10)[0])
    assert ids[2] > 0 and set(ids[2:]) == {ids[2]}, ids
