"""Segments keep their identity across frames (ROS-free).

    from ovseg_ros.tracking import SegmentTracker
    tracker = SegmentTracker()
    track_ids = tracker.update(prediction, stamp)   # one id per prediction.segments entry

Things are associated frame to frame ByteTrack-style (Zhang et al., ECCV 2022): segments
at or above `high_score` first, against the confirmed tracks; then those between
`low_score` and `high_score`, against the confirmed tracks left (a low score is often an
object half hidden, not a false positive); then segments find lost tracks again near
where they were (low-score ones only by their embeddings: an object coming out from behind
something), and the confident rest go to the young (unconfirmed) tracks. Each pass is one
global assignment (SciPy's Hungarian solver) on a cost from mask overlap with the previous frame, box overlap with a
constant-velocity prediction (the motion prior, in seconds: cameras drop frames) or the last
box, the
class (a different class costs more, and after a vocabulary change only the same class
matches) and, where both have one, the segments' embeddings (gated: never to an object that
looks otherwise). A track is confirmed after `min_hits` matches (2, as ByteTrack activates
its tracks; the id is 0 until then) and kept `max_lost_seconds` without one (short
occlusions). A stuff class keeps one id while it stays in view. Time going back
(a bag loop) starts afresh. One tracker per camera.

Costs are whole-frame numpy (a label co-occurrence histogram on a coarse grid, box IoU
matrices): no per-pixel Python loop; the loops are over tracks or segments only where
their state is updated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

_INFEASIBLE = 1e6


@dataclass(frozen=True)
class TrackerConfig:
    """high_score / low_score: the two passes' score bounds (below low_score a segment is
    not associated). min_hits: matches before an id is given. max_lost_seconds: how long a
    track survives unseen. min_overlap: least mask or predicted-box IoU to associate.
    class_change_cost: added for a different class (label flips between similar classes).
    embedding_weight: share of the cost from embedding distance, where there are
    embeddings; embedding_gate: the largest embedding distance ((1 - cos) / 2) at which a
    segment continues a track or finds a lost one again (where both have embeddings). grid: the mask-overlap histogram samples every grid-th
    pixel each way."""

    high_score: float = 0.5
    low_score: float = 0.1
    min_hits: int = 2
    max_lost_seconds: float = 1.5
    min_overlap: float = 0.1
    class_change_cost: float = 0.3
    embedding_weight: float = 0.3
    embedding_gate: float = 0.15
    grid: int = 4

    def __post_init__(self) -> None:
        if not 0 <= self.low_score <= self.high_score <= 1:
            raise ValueError("0 <= low_score <= high_score <= 1 is required")
        if self.min_hits < 1 or self.max_lost_seconds < 0 or self.grid < 1 or not 0 < self.min_overlap <= 1:
            raise ValueError("min_hits >= 1, max_lost_seconds >= 0, grid >= 1 and 0 < min_overlap <= 1 are required")


@dataclass
class _Tracks:
    """Live thing tracks, one row each (arrays grow and shrink together)."""

    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    labels: list = field(default_factory=list)
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # x0, y0, x1, y1 (pixels)
    velocity: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # of the box corners, px/s
    extent: np.ndarray = field(default_factory=lambda: np.zeros(0))  # box diagonal when last seen whole, px
    last_seen: np.ndarray = field(default_factory=lambda: np.zeros(0))
    hits: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    version: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # vocabulary of the last match
    embeddings: np.ndarray | None = None  # [T, D] unit rows (NaN rows: none)

    def keep(self, rows: np.ndarray) -> None:
        self.ids, self.boxes, self.velocity, self.extent = self.ids[rows], self.boxes[rows], self.velocity[rows], self.extent[rows]
        self.last_seen, self.hits, self.version = self.last_seen[rows], self.hits[rows], self.version[rows]
        self.labels = [self.labels[i] for i in np.flatnonzero(rows)] if rows.dtype == bool else [self.labels[i] for i in rows]
        if self.embeddings is not None:
            self.embeddings = self.embeddings[rows]


class SegmentTracker:
    def __init__(self, config: TrackerConfig = TrackerConfig()) -> None:
        self.config = config
        self._tracks = _Tracks()
        self._next_id = 1
        self._stuff: dict[str, tuple[int, float]] = {}  # label -> (id, last seen)
        self._previous_map: np.ndarray | None = None  # coarse grid of the last frame: track row + 1, 0 = none
        self._previous_ids: np.ndarray = np.zeros(0, np.int64)  # track id of each row of that map
        self._last_stamp: float | None = None
        self._previous_stamp: float | None = None

    def reset(self) -> None:
        self.__init__(self.config)

    def update(self, prediction, stamp: float, embeddings: np.ndarray | None = None) -> list[int]:
        """One id per `prediction.segments` entry, in order (0: a thing not yet
        confirmed, or not associated). `stamp` in seconds; `embeddings` [N, D] per
        segment (default: the prediction's own, where it has them)."""
        stamp = float(stamp)
        if self._last_stamp is not None and stamp < self._last_stamp - 1e-6:
            self.reset()  # time went back: a bag loop or a restarted simulation
        self._previous_stamp, self._last_stamp = self._last_stamp, stamp
        segments = prediction.segments
        cfg, tracks = self.config, self._tracks
        panoptic = np.asarray(prediction.panoptic)
        version = int(getattr(prediction, "vocabulary_version", 0))
        if embeddings is None:
            embeddings = getattr(prediction, "embeddings", None)
        result = np.zeros(len(segments), np.int64)
        things = np.array([i for i, s in enumerate(segments) if s.is_thing], np.int64)
        for i, s in enumerate(segments):
            if not s.is_thing:
                result[i] = self._stuff_id(s.label, stamp)
        self._stuff = {k: v for k, v in self._stuff.items() if stamp - v[1] <= cfg.max_lost_seconds}

        # drop tracks lost too long; predict the others' boxes to this frame
        alive = stamp - tracks.last_seen <= cfg.max_lost_seconds
        tracks.keep(alive)
        height, width = panoptic.shape
        predicted = tracks.boxes + tracks.velocity * (stamp - tracks.last_seen)[:, None]
        predicted = np.clip(predicted, 0, [width, height, width, height])  # what of it the camera can see
        coarse = panoptic[:: cfg.grid, :: cfg.grid]
        boxes = np.array([_corners(segments[i].bbox) for i in things], float).reshape(-1, 4)
        scores = np.array([segments[i].score for i in things], float)
        labels = [segments[i].label for i in things]
        mask_iou, inside = self._mask_overlap(coarse, np.array([segments[i].id for i in things], np.int64))
        # box overlap where the motion prior puts the track or where it was last seen (an
        # object that stopped or turned back: at a border, its sliver's velocity is stale)
        similarity = np.maximum(mask_iou, np.maximum(_box_iou(boxes, predicted), _box_iou(boxes, tracks.boxes)))
        cost = 1.0 - similarity
        same = np.array([[label == t for t in tracks.labels] for label in labels], bool).reshape(len(things), len(tracks.labels))
        same_vocabulary = tracks.version[None, :] == version
        cost = np.where(same, cost, np.where(same_vocabulary, cost + cfg.class_change_cost, _INFEASIBLE))
        own = None if embeddings is None else _unit(np.asarray(embeddings, float)[things])  # the things' rows
        distance, known = self._embedding_distance(own)
        # never to an object that looks otherwise: not a look-alike of its class that
        # crosses it, nor another class (a label flip keeps the embedding)
        unlike = np.zeros(cost.shape, bool) if distance is None else known & (distance > cfg.embedding_gate)
        if distance is not None:
            cost = np.where(known, (1 - cfg.embedding_weight) * cost + cfg.embedding_weight * distance, cost)
        cost = np.where(unlike, _INFEASIBLE, cost)
        cost = np.where(similarity >= cfg.min_overlap, cost, _INFEASIBLE)

        # two passes: confident segments against every track, then the rest against the
        # confirmed tracks still free
        matched_track = np.full(len(things), -1, np.int64)
        high = np.flatnonzero(scores >= cfg.high_score)
        low = np.flatnonzero((scores >= cfg.low_score) & (scores < cfg.high_score))
        confirmed = tracks.hits >= cfg.min_hits
        free = np.ones(len(tracks.ids), bool)
        # confirmed tracks first (ByteTrack): a young track on the same object never wins
        for rows in (high, low):  # (`free` changes with each pass)
            self._assign(cost, rows[matched_track[rows] < 0], free & confirmed, matched_track, free)
        # a third pass finds lost confirmed tracks again where motion cannot (an object that
        # turned back while out of view or hidden): near where it was last seen or was
        # predicted to be, same class, by embedding where there are embeddings. A segment
        # lying mostly on the last mask of a track matched already, or inside its predicted
        # box with its class and looks (its last mask may be older: a missed frame), is a
        # piece of that object: it neither finds nor starts a track
        piece = same & ~unlike
        part_of = _part_of(np.maximum(inside, np.where(piece, _box_inside(boxes, predicted), 0.0)), matched_track)
        covered = part_of >= 0
        refind = self._refind_cost(boxes, predicted, piece, distance, known)
        lost = free & confirmed & (tracks.last_seen < (self._previous_stamp if self._previous_stamp is not None else stamp))
        self._assign(refind, high[(matched_track[high] < 0) & ~covered[high]], lost, matched_track, free)
        if distance is not None:  # an object coming out from behind something scores low: its looks decide
            refind_by_looks = np.where(known, refind, _INFEASIBLE)
            self._assign(refind_by_looks, low[(matched_track[low] < 0) & ~covered[low]], lost, matched_track, free)
        self._assign(cost, high[(matched_track[high] < 0) & ~covered[high]], free & ~confirmed, matched_track, free)

        # matched tracks: new box (with its pieces: the object's), velocity (smoothed), hits, class
        seg_rows = np.flatnonzero(matched_track >= 0)
        track_rows = matched_track[seg_rows]
        boxes, part_of = _with_pieces(boxes, matched_track, part_of, predicted)
        if seg_rows.size:
            elapsed = np.maximum(stamp - tracks.last_seen[track_rows], 1e-3)[:, None]
            measured = (boxes[seg_rows] - tracks.boxes[track_rows]) / elapsed
            first = tracks.hits[track_rows] == 1
            # a box cut by the border or shrunk or grown by occlusion says little about motion
            whole = _whole(boxes[seg_rows], tracks.boxes[track_rows], panoptic.shape)
            smoothed = np.where(first[:, None], measured, 0.5 * tracks.velocity[track_rows] + 0.5 * measured)
            tracks.velocity[track_rows] = np.where(whole[:, None], smoothed, tracks.velocity[track_rows])
            diagonal = _diagonal(boxes[seg_rows])
            tracks.extent[track_rows] = np.where(whole, diagonal, np.maximum(tracks.extent[track_rows], diagonal))
            tracks.boxes[track_rows] = boxes[seg_rows]
            tracks.last_seen[track_rows] = stamp
            tracks.hits[track_rows] += 1
            tracks.version[track_rows] = version
            for seg_row, track_row in zip(seg_rows, track_rows):
                tracks.labels[track_row] = labels[seg_row]
            if own is not None:
                self._store_embeddings(track_rows, own[seg_rows])
        # unconfirmed tracks that found nothing go (ByteTrack); new tracks for confident leftovers
        unmatched_new = (tracks.hits < cfg.min_hits) & free & (tracks.last_seen < stamp)
        keep = ~unmatched_new
        index = np.cumsum(keep) - 1
        tracks.keep(keep)
        if index.size:
            matched_track = np.where(matched_track >= 0, index[np.maximum(matched_track, 0)], -1)
            part_of = np.where(part_of >= 0, index[np.maximum(part_of, 0)], -1)
        # a confident leftover starts a track unless it lies mostly on a track's last mask
        # (a piece of a split mask, a duplicate): that object is tracked already
        start = np.flatnonzero((matched_track < 0) & (scores >= cfg.high_score) & ~covered)
        if start.size:
            self._add(boxes[start], [labels[i] for i in start], stamp, version, None if own is None else own[start])
            matched_track[start] = len(tracks.ids) - start.size + np.arange(start.size)
        ok = matched_track >= 0
        confirmed_now = np.zeros(len(things), bool)
        confirmed_now[ok] = tracks.hits[matched_track[ok]] >= cfg.min_hits
        result[things[confirmed_now]] = tracks.ids[matched_track[confirmed_now]]
        # pieces are remembered as part of their track's mask (their ids stay 0: one id, one segment)
        self._remember(coarse, prediction, things, np.where(matched_track >= 0, matched_track, part_of))
        return result.tolist()

    @staticmethod
    def _assign(cost, rows, allowed, matched_track, free) -> None:
        """One global assignment of segments `rows` to the allowed tracks (in place)."""
        cols = np.flatnonzero(allowed)
        if not rows.size or not cols.size:
            return
        r, c = linear_sum_assignment(cost[np.ix_(rows, cols)])
        ok = cost[rows[r], cols[c]] < _INFEASIBLE
        matched_track[rows[r[ok]]] = cols[c[ok]]
        free[cols[c[ok]]] = False

    def _embedding_distance(self, own: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """[things, tracks] embedding distance ((1 - cos) / 2) and where both sides have
        an embedding; (None, None) when either side has none."""
        tracks = self._tracks
        if own is None or tracks.embeddings is None or not len(own):
            return None, None
        distance = (1.0 - own @ np.nan_to_num(tracks.embeddings).T) / 2
        return distance, np.isfinite(own).all(1)[:, None] & np.isfinite(tracks.embeddings).all(1)[None, :]

    def _refind_cost(self, boxes, predicted, allowed, apart, known) -> np.ndarray:
        """[things, tracks] cost of finding a lost track again: centre distance to where it
        was last seen or predicted, in track sizes (gate: 1.5), plus embedding distance;
        only where `allowed` (same class, not looking otherwise)."""
        tracks, cfg = self._tracks, self.config
        centre = (boxes[:, None, :2] + boxes[:, None, 2:]) / 2
        last = (tracks.boxes[None, :, :2] + tracks.boxes[None, :, 2:]) / 2
        ahead = (predicted[None, :, :2] + predicted[None, :, 2:]) / 2
        scale = np.maximum(tracks.extent, 1.0)[None, :]  # its size when last seen whole (not the sliver at a border)
        distance = np.minimum(np.linalg.norm(centre - last, axis=2), np.linalg.norm(centre - ahead, axis=2)) / scale
        cost = distance / 2
        if apart is not None:
            cost = np.where(known, 0.5 * cost + 0.5 * apart / max(cfg.embedding_gate, 1e-6), cost)
        return np.where(allowed & (distance <= 1.5), cost, _INFEASIBLE)

    def _stuff_id(self, label: str, stamp: float) -> int:
        known = self._stuff.get(label)
        if known is None or stamp - known[1] > self.config.max_lost_seconds:
            known = (self._next_id, stamp)
            self._next_id += 1
        self._stuff[label] = (known[0], stamp)
        return known[0]

    def _add(self, boxes, labels, stamp, version, embeddings) -> None:
        tracks, count = self._tracks, len(labels)
        tracks.ids = np.concatenate([tracks.ids, np.arange(self._next_id, self._next_id + count)])
        self._next_id += count
        tracks.labels += labels
        tracks.boxes = np.concatenate([tracks.boxes, boxes])
        tracks.velocity = np.concatenate([tracks.velocity, np.zeros((count, 4))])
        tracks.extent = np.concatenate([tracks.extent, _diagonal(boxes)])
        tracks.last_seen = np.concatenate([tracks.last_seen, np.full(count, stamp)])
        tracks.hits = np.concatenate([tracks.hits, np.ones(count, np.int64)])
        tracks.version = np.concatenate([tracks.version, np.full(count, version, np.int64)])
        if embeddings is not None or tracks.embeddings is not None:
            width = (embeddings if embeddings is not None else tracks.embeddings).shape[1]
            old = tracks.embeddings if tracks.embeddings is not None else np.full((len(tracks.ids) - count, width), np.nan)
            new = embeddings if embeddings is not None else np.full((count, width), np.nan)
            tracks.embeddings = np.concatenate([old, new])

    def _store_embeddings(self, rows: np.ndarray, values: np.ndarray) -> None:
        tracks = self._tracks
        if tracks.embeddings is None:
            tracks.embeddings = np.full((len(tracks.ids), values.shape[1]), np.nan)
        tracks.embeddings[rows] = values

    def _mask_overlap(self, coarse: np.ndarray, segment_ids: np.ndarray) -> np.ndarray:
        """[things, tracks] IoU of each segment's mask with each track's mask in the
        previous frame, and the share of the segment on it, on the coarse grid (0 for
        tracks not seen there)."""
        tracks = self._tracks
        result = np.zeros((len(segment_ids), len(tracks.ids)))
        inside = np.zeros((len(segment_ids), len(tracks.ids)))
        previous = self._previous_map
        if previous is None or previous.shape != coarse.shape or not len(segment_ids) or not len(tracks.ids):
            return result, inside
        # current: segment row + 1 (0: none); previous: row of _previous_ids + 1
        current = _rows_of(coarse, segment_ids)
        width = len(self._previous_ids) + 1
        pairs = np.bincount((current * width + previous).ravel(), minlength=(len(segment_ids) + 1) * width)
        pairs = pairs.reshape(len(segment_ids) + 1, width)
        area_now, area_before = pairs.sum(1)[1:, None], pairs.sum(0)[None, 1:]
        iou = pairs[1:, 1:] / np.maximum(area_now + area_before - pairs[1:, 1:], 1)
        # previous rows -> current track rows by id
        position = {int(track_id): row for row, track_id in enumerate(tracks.ids)}
        columns = np.array([position.get(int(i), -1) for i in self._previous_ids], np.int64)
        present = columns >= 0
        result[:, columns[present]] = iou[:, present]
        inside[:, columns[present]] = (pairs[1:, 1:] / np.maximum(area_now, 1))[:, present]
        return result, inside

    def _remember(self, coarse, prediction, things, matched_track) -> None:
        """The coarse grid of this frame, each pixel as 1 + the row of its track's id in
        _previous_ids (several segments can be one track: the pieces of a split mask)."""
        ok = matched_track >= 0
        ids, track_of_segment = np.unique(self._tracks.ids[matched_track[ok]], return_inverse=True)
        segment_ids = np.array([prediction.segments[i].id for i in things[ok]], np.int64)
        self._previous_map = np.concatenate([[0], track_of_segment.ravel() + 1])[_rows_of(coarse, segment_ids)]
        self._previous_ids = ids


def _rows_of(coarse: np.ndarray, segment_ids: np.ndarray) -> np.ndarray:
    """The panoptic grid as 1 + the row of each pixel's segment in `segment_ids` (0: none)."""
    lookup = np.zeros(int(max(coarse.max(initial=0), segment_ids.max(initial=0))) + 1, np.int64)
    lookup[segment_ids] = np.arange(1, len(segment_ids) + 1)
    return lookup[np.clip(coarse, 0, len(lookup) - 1)]


def _corners(bbox) -> tuple[float, float, float, float]:
    x, y, w, h = bbox
    return float(x), float(y), float(x + w), float(y + h)


def _part_of(inside: np.ndarray, matched_track: np.ndarray) -> np.ndarray:
    """Per unmatched segment, the track another segment matched that over half of it lies on
    (`inside`: [segments, tracks] shares): it is a piece of a split mask, or a duplicate
    (-1: none)."""
    if not inside.size:
        return np.full(len(matched_track), -1, np.int64)
    taken = np.zeros(inside.shape[1], bool)
    taken[matched_track[matched_track >= 0]] = True
    shares = np.where(taken[None, :], inside, 0.0)
    best = shares.argmax(axis=1)
    return np.where((matched_track < 0) & (shares[np.arange(len(best)), best] > 0.5), best, -1)


def _with_pieces(boxes, matched_track, part_of, predicted) -> tuple[np.ndarray, np.ndarray]:
    """Boxes where each matched segment's box grows to hold the pieces of its track, where
    a piece touches it and together they are about the size the track was predicted to have
    (not an object of its class passing by), and `part_of` for those pieces only."""
    pieces = np.flatnonzero(part_of >= 0)
    if not pieces.size:
        return boxes, part_of
    segment_of_track = np.full(len(predicted), -1, np.int64)
    matched = np.flatnonzero(matched_track >= 0)
    segment_of_track[matched_track[matched]] = matched
    owner = segment_of_track[part_of[pieces]]
    union = np.concatenate([np.minimum(boxes[owner, :2], boxes[pieces, :2]), np.maximum(boxes[owner, 2:], boxes[pieces, 2:])], 1)
    expected = predicted[part_of[pieces]]
    gap = np.maximum(boxes[pieces, :2] - boxes[owner, 2:], boxes[owner, :2] - boxes[pieces, 2:]).max(axis=1)
    fits = (gap <= 2) & (_area(union) <= 1.3 * _area(expected))
    pieces, owner = pieces[fits], owner[fits]
    merged, kept = boxes.copy(), np.full_like(part_of, -1)
    kept[pieces] = part_of[pieces]
    np.minimum.at(merged[:, 0], owner, boxes[pieces, 0])
    np.minimum.at(merged[:, 1], owner, boxes[pieces, 1])
    np.maximum.at(merged[:, 2], owner, boxes[pieces, 2])
    np.maximum.at(merged[:, 3], owner, boxes[pieces, 3])
    return merged, kept


def _whole(new: np.ndarray, old: np.ndarray, shape) -> np.ndarray:
    """Per box pair: the new box is clear of the image border and of about the old size."""
    height, width = shape
    clear = (new[:, 0] > 1) & (new[:, 1] > 1) & (new[:, 2] < width - 1) & (new[:, 3] < height - 1)
    ratio = _area(new) / np.maximum(_area(old), 1e-9)
    return clear & (ratio > 0.75) & (ratio < 1.33)


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _diagonal(boxes: np.ndarray) -> np.ndarray:
    return np.hypot(boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1])


def _box_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] intersection areas of x0, y0, x1, y1 boxes."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    return np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)


def _box_inside(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] share of each box of a that lies inside each box of b."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    return _box_intersection(a, b) / np.maximum(_area(a), 1e-9)[:, None]


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] IoU of x0, y0, x1, y1 boxes."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    inter = _box_intersection(a, b)
    return inter / np.maximum(_area(a)[:, None] + _area(b)[None, :] - inter, 1e-9)


def _unit(rows: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(rows, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return rows / norm
