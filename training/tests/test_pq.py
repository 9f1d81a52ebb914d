"""PQ against an independent implementation (torchmetrics) on synthetic predictions.

Known convention difference, kept out of the cross-check: where the prediction leaves
pixels unlabelled, torchmetrics removes them from the union, while COCO's panopticapi
(which we follow) only removes ground-truth void. The synthetic predictions below label
every pixel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg_training.evaluate import PQStat, SemanticIoU

CATEGORIES = {1: True, 2: True, 3: False, 4: False}


def random_panoptic(rng, size=40):
    """An id map of things (rectangles) over stuff bands, and its segments."""
    ids = np.zeros((size, size), np.int64)
    segments = []
    ids[: size // 2], ids[size // 2 :] = 1, 2
    segments += [{"id": 1, "category_id": 3}, {"id": 2, "category_id": 4}]
    for next_id in range(3, 3 + int(rng.integers(1, 5))):
        y, x = rng.integers(0, size - 8, 2)
        h, w = rng.integers(4, 12, 2)
        ids[y : y + h, x : x + w] = next_id
        segments.append({"id": next_id, "category_id": int(rng.integers(1, 3))})
    present = set(np.unique(ids).tolist())
    return ids, [s for s in segments if s["id"] in present]


def perturb(rng, ids, segments):
    """Shift boundaries, relabel some things, drop a segment now and then (stuff keeps
    its class: COCO format has one segment per stuff class, as our fusion produces)."""
    out = np.roll(ids, int(rng.integers(-3, 4)), axis=int(rng.integers(0, 2)))
    kept = []
    for s in segments:
        if rng.random() < 0.1 and CATEGORIES[s["category_id"]]:
            rows = np.nonzero(out == s["id"])[0]
            out[out == s["id"]] = np.where(rows < out.shape[0] // 2, 1, 2)  # painted over by the stuff band
            continue
        category = s["category_id"]
        if CATEGORIES[category] and rng.random() < 0.2:
            category = int(rng.choice([c for c, thing in CATEGORIES.items() if thing]))
        kept.append({"id": s["id"], "category_id": category})
    return out, kept


def to_torchmetrics(ids, segments):
    category = {s["id"]: s["category_id"] for s in segments}
    cat_map = np.vectorize(lambda i: category.get(i, 0))(ids)
    instance = np.where(np.vectorize(lambda i: CATEGORIES.get(category.get(i, 0), False))(ids), ids, 0)
    return torch.from_numpy(np.stack([cat_map, instance], -1))


def test_perfect_prediction_scores_100():
    rng = np.random.default_rng(0)
    stat = PQStat()
    for _ in range(5):
        ids, segments = random_panoptic(rng)
        stat.add_image(ids, segments, ids, segments)
    assert stat.summary(CATEGORIES)["All"]["pq"] == pytest.approx(100.0)


def test_pq_matches_torchmetrics():
    from torchmetrics.detection import PanopticQuality

    rng = np.random.default_rng(1)
    ours = PQStat()
    reference = PanopticQuality(things={1, 2}, stuffs={3, 4}, allow_unknown_preds_category=True)
    for _ in range(30):
        gt_ids, gt_segments = random_panoptic(rng)
        pred_ids, pred_segments = perturb(rng, gt_ids, gt_segments)
        ours.add_image(gt_ids, gt_segments, pred_ids, pred_segments)
        reference.update(to_torchmetrics(pred_ids, pred_segments)[None], to_torchmetrics(gt_ids, gt_segments)[None])
    assert ours.summary(CATEGORIES)["All"]["pq"] == pytest.approx(100 * float(reference.compute()), abs=1e-3)


def test_miou():
    metric = SemanticIoU(3)
    gt = np.array([[0, 0, 1, 1], [2, 2, -1, -1]])
    pred = np.array([[0, 1, 1, 1], [2, -1, 0, 0]])
    metric.add(gt, pred)
    # class 0: inter 1, union 2; class 1: inter 2, union 3; class 2: inter 1, union 2
    assert metric.miou() == pytest.approx(100 * (0.5 + 2 / 3 + 0.5) / 3)
