"""Synthetic tracking sequences and their scoring, shared by tests/test_tracking.py and
benchmarks/bench_tracking.py.

A sequence: objects (boxes and ellipses, several classes) that move at constant velocity
with bounces, cross each other (depth order decides who hides whom), leave the image and
come back, pass behind a pillar (hidden up to `max_hidden` seconds), on a floor (stuff);
seen by a "segmenter" that renumbers segments every frame, misses 10% of objects,
dilates, erodes or splits masks, flips 5% of labels to a similar class, scores partly
hidden objects low, and a camera that drops 5% of frames. The truth is each object's
visible mask. Scored with TrackEval (HOTA, CLEAR's MOTA and ID switches, Identity's IDF1)
on mask IoU, as its MOTS evaluation does.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import cv2
import numpy as np

from ovseg_ros.predictor import Prediction, Segment

THINGS = ("person", "forklift", "pallet", "box")
SIMILAR = {"pallet": "box", "box": "pallet", "person": "person", "forklift": "forklift"}
HEIGHT, WIDTH, FPS = 240, 320, 15.0
EMBEDDING_DIM, EMBEDDING_NOISE = 64, 0.3  # per-frame noise on an appearance of norm ~13


@dataclass
class Sequence:
    predictions: list  # Prediction per kept frame
    stamps: list  # seconds
    truth: list  # per kept frame: H x W int32 map of object index + 1 (0: none)
    num_objects: int
    embeddings: list  # per kept frame: [segments, D] appearance embeddings, in segment order


def make_sequence(seed: int, seconds: float = 8.0, num_objects: int = 8, max_hidden: float = 1.0, noise: bool = True) -> Sequence:
    rng = np.random.default_rng(seed)
    position = np.stack([rng.uniform(20, WIDTH - 60, num_objects), rng.uniform(40, HEIGHT - 70, num_objects)], 1)
    speed = rng.uniform(25, 70, num_objects) * rng.choice([-1, 1], num_objects)
    velocity = np.stack([speed, rng.uniform(-15, 15, num_objects)], 1)
    size = np.stack([rng.uniform(22, 48, num_objects), rng.uniform(22, 48, num_objects)], 1)
    shape = rng.integers(0, 2, num_objects)  # 0 box, 1 ellipse
    depth = rng.permutation(num_objects)  # draw order: later is nearer
    labels = [THINGS[i] for i in rng.integers(0, len(THINGS), num_objects)]
    # appearance: objects of a class look alike (a shared class direction) but not the same
    class_direction = {name: rng.normal(size=EMBEDDING_DIM) for name in THINGS + ("floor",)}
    appearance = np.stack([class_direction[labels[k]] + 0.8 * rng.normal(size=EMBEDDING_DIM) for k in range(num_objects)])
    # the pillar hides what passes behind it for at most max_hidden seconds at the slowest speed
    pillar_width = int(min(60, max(10, max_hidden * np.abs(speed).min() - size[:, 0].max() / 2)))
    pillar_x = int(rng.uniform(60, WIDTH - 60 - pillar_width))
    # off-screen excursions: bounce at most max_hidden seconds beyond the border
    beyond = np.abs(speed) * max_hidden / 2 - size[:, 0]  # out of view (partly or wholly) for max_hidden seconds
    predictions, stamps, truth, embeddings = [], [], [], []
    frame = 0
    while frame / FPS < seconds:
        t = frame / FPS
        frame += 1
        position += velocity / FPS
        for axis, limit in ((0, WIDTH), (1, HEIGHT)):
            low = -size[:, axis] - (beyond if axis == 0 else 0)
            high = limit + (beyond if axis == 0 else -size[:, axis])
            flip = (position[:, axis] < low) | (position[:, axis] > high)
            velocity[flip, axis] *= -1
            position[:, axis] = np.clip(position[:, axis], low, high)
        if noise and rng.random() < 0.05:
            continue  # a dropped frame
        objects = np.zeros((HEIGHT, WIDTH), np.int32)
        for k in np.argsort(depth):  # far to near
            x, y = position[k]
            w, h = size[k]
            pad = 200  # drawn on a padded canvas: OpenCV clips shapes beyond the border to a 1 px line
            canvas = np.zeros((HEIGHT + 2 * pad, WIDTH + 2 * pad), np.uint8)
            if shape[k]:
                cv2.ellipse(canvas, (int(x + w / 2) + pad, int(y + h / 2) + pad), (int(w / 2), int(h / 2)), 0, 0, 360, 1, -1)
            else:
                cv2.rectangle(canvas, (int(x) + pad, int(y) + pad), (int(x + w) + pad, int(y + h) + pad), 1, -1)
            objects[canvas[pad:-pad, pad:-pad] > 0] = k + 1
        objects[:, pillar_x: pillar_x + pillar_width] = 0  # the pillar is nearest
        full_area = size[:, 0] * size[:, 1] * np.where(shape == 1, np.pi / 4, 1.0)
        prediction, owners = _segment(objects, labels, full_area, rng, noise)
        predictions.append(prediction)
        stamps.append(t)
        truth.append(objects)
        seen = np.stack([appearance[k] if k >= 0 else class_direction["floor"] for k in owners]) if owners else np.zeros((0, EMBEDDING_DIM))
        embeddings.append(seen + (EMBEDDING_NOISE * rng.normal(size=seen.shape) if noise else 0.0))
    return Sequence(predictions, stamps, truth, num_objects, embeddings)


def _segment(objects, labels, full_area, rng, noise):
    """What a segmenter makes of one frame: segments renumbered in random order, and the
    object each segment is of (-1: the floor)."""
    panoptic = np.zeros_like(objects)
    floor = np.zeros(objects.shape, bool)
    floor[int(HEIGHT * 0.8):] = True
    pieces = []  # (mask, label, is_thing, score)
    visible = np.bincount(objects.ravel(), minlength=len(labels) + 1)[1:]
    for k in np.flatnonzero(visible >= 30):
        mask = objects == k + 1
        if noise:
            if rng.random() < 0.10:
                continue  # missed
            kind = rng.random()
            if kind < 0.15:
                mask = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=int(rng.integers(1, 3))) > 0
            elif kind < 0.30:
                mask = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=int(rng.integers(1, 3))) > 0
        label = labels[k]
        if noise and rng.random() < 0.05:
            label = SIMILAR[label]
        fraction = visible[k] / full_area[k]
        score = float(rng.uniform(0.6, 0.95) if fraction > 0.5 else rng.uniform(0.2, 0.5))
        if noise and rng.random() < 0.05 and mask.sum() > 200:  # split in two
            ys, xs = np.nonzero(mask)
            cut = np.median(xs)
            left = mask.copy()
            left[:, int(cut):] = False
            pieces += [(left, label, True, score, k), (mask & ~left, label, True, score * 0.8, k)]
        else:
            pieces.append((mask, label, True, score, k))
    pieces.append((floor & (objects == 0), "floor", False, 0.9, -1))
    order = rng.permutation(len(pieces))
    segments, owners = [], []
    for new_id, p in enumerate(order, 1):
        mask, label, is_thing, score, owner = pieces[p]
        mask = mask & (panoptic == 0)
        if mask.sum() == 0:
            continue
        panoptic[mask] = new_id
        ys, xs = np.nonzero(mask)
        category = (THINGS + ("floor",)).index(label)
        segments.append(Segment(new_id, category, label, is_thing, score, int(mask.sum()),
                                (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)),
                                (float(xs.mean()), float(ys.mean()))))
        owners.append(owner)
    return Prediction(panoptic, np.zeros_like(panoptic), segments, vocabulary_version=1), owners


def track(sequence: Sequence, tracker, with_embeddings: bool = True) -> list[dict[int, int]]:
    """Per frame: segment id -> track id (things with a confirmed id only)."""
    out = []
    for prediction, stamp, embeddings in zip(sequence.predictions, sequence.stamps, sequence.embeddings):
        ids = tracker.update(prediction, stamp, embeddings if with_embeddings else None)
        out.append({s.id: i for s, i in zip(prediction.segments, ids) if s.is_thing and i > 0})
    return out


def oracle(sequence: Sequence) -> list[dict[int, int]]:
    """Per frame: segment id -> the object most of it shows (+1), as a tracker that never
    errs would give: the ceiling the segmenter's misses and split masks leave."""
    out = []
    for objects, prediction in zip(sequence.truth, sequence.predictions):
        things = np.array([s.id for s in prediction.segments if s.is_thing], np.int64)
        pairs = np.bincount((prediction.panoptic * (sequence.num_objects + 1) + objects).ravel(),
                            minlength=(int(prediction.panoptic.max()) + 1) * (sequence.num_objects + 1))
        owner = pairs.reshape(-1, sequence.num_objects + 1)[:, 1:].argmax(axis=1) + 1
        out.append({int(i): int(owner[i]) for i in things})
    return out


def score(sequence: Sequence, tracked: list[dict[int, int]]) -> dict[str, float]:
    """HOTA, MOTA, IDF1, ID switches (TrackEval) on mask IoU with the visible masks."""
    with contextlib.redirect_stdout(io.StringIO()):  # TrackEval prints its configs and optional-import notes
        from trackeval.metrics import CLEAR, HOTA, Identity

        metrics = [HOTA(), CLEAR({"PRINT_CONFIG": False}), Identity({"PRINT_CONFIG": False})]
    track_index: dict[int, int] = {}
    data = {"gt_ids": [], "tracker_ids": [], "similarity_scores": [], "num_timesteps": len(sequence.truth)}
    gt_seen: set[int] = set()
    gt_dets = tracker_dets = 0
    for objects, prediction, assigned in zip(sequence.truth, sequence.predictions, tracked):
        gt = np.flatnonzero(np.bincount(objects.ravel(), minlength=sequence.num_objects + 1)[1:] >= 30)
        segment_ids = np.array(sorted(assigned), np.int64)
        tracker = np.array([track_index.setdefault(assigned[s], len(track_index)) for s in segment_ids], np.int64)
        lookup = np.zeros(int(prediction.panoptic.max()) + 1, np.int64)
        lookup[segment_ids] = np.arange(1, len(segment_ids) + 1)
        mine = lookup[prediction.panoptic]
        pairs = np.bincount((objects * (len(segment_ids) + 1) + mine).ravel(),
                            minlength=(sequence.num_objects + 1) * (len(segment_ids) + 1)).reshape(sequence.num_objects + 1, -1)
        inter = pairs[1:, 1:][gt]
        union = pairs[1:].sum(1)[gt][:, None] + pairs[:, 1:].sum(0)[None, :] - inter
        data["gt_ids"].append(gt)
        data["tracker_ids"].append(tracker)
        data["similarity_scores"].append(inter / np.maximum(union, 1))
        gt_seen.update(gt.tolist())
        gt_dets += len(gt)
        tracker_dets += len(tracker)
    data.update(num_gt_ids=sequence.num_objects, num_tracker_ids=max(len(track_index), 1), num_gt_dets=gt_dets,
                num_tracker_dets=tracker_dets)
    results = {}
    for metric in metrics:
        results.update(metric.eval_sequence(data))
    return {"HOTA": float(np.mean(results["HOTA"])), "MOTA": float(results["MOTA"]), "IDF1": float(results["IDF1"]),
            "IDSW": int(results["IDSW"]), "tracks": len(gt_seen)}
