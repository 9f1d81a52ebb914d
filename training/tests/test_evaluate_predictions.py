"""`ovseg-eval --predictions` (saved COCO-format predictions, no model) against a second,
independent implementation of COCO's PQ rules (panopticapi/evaluation.py: a match is
IoU > 0.5, strictly; the union leaves out the prediction's pixels on gt void; crowd is
never matched and absorbs unmatched predictions of its category; gt areas from the JSON)
written here the slow, obvious way: one boolean mask per segment, every pair tried. The
data has crowd, void, 24-bit ids (R + 256 G + 256^2 B, over 2^20) and IoU exactly 0.5."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from ovseg_training.evaluate import main

CATEGORIES = [
    {"id": 7, "name": "person", "isthing": 1},
    {"id": 9, "name": "car", "isthing": 1},
    {"id": 21, "name": "road", "isthing": 0},
    {"id": 30, "name": "sky", "isthing": 0},
]
BIG_IDS = [(1 << 24) - 1, 0xABCDEF, (1 << 20) + 3, (1 << 21) + 7, 0x10FFFF, 0x800001, 0xFF00FF, 0x123456]


def write_png(path: Path, ids: np.ndarray) -> None:
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def random_image(rng, size=48):
    """Ground truth (ids, segments) and a prediction (ids, segments) of one image."""
    ids = rng.choice(BIG_IDS, size=len(BIG_IDS), replace=False)
    gt = np.zeros((size, size), np.int64)  # 0: void
    gt_segments = []
    gt[: size // 2, :] = ids[0]
    gt[size // 2:, :] = ids[1]
    gt_segments += [{"id": int(ids[0]), "category_id": 30, "iscrowd": 0}, {"id": int(ids[1]), "category_id": 21, "iscrowd": 0}]
    gt[rng.integers(0, size): , : rng.integers(1, 6)] = 0  # a void strip
    for k in range(2, 2 + int(rng.integers(2, 5))):
        y, x = rng.integers(0, size - 10, 2)
        h, w = rng.integers(3, 12, 2)
        gt[y: y + h, x: x + w] = ids[k]
        gt_segments.append({"id": int(ids[k]), "category_id": int(rng.choice([7, 9])), "iscrowd": int(rng.random() < 0.25)})
    present = set(np.unique(gt).tolist())
    gt_segments = [s | {"area": int((gt == s["id"]).sum())} for s in gt_segments if s["id"] in present]
    # the prediction: shifted, some classes changed, a segment lost to the sky, new ids
    pred = np.roll(gt, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(0, 1))
    renumber = {s["id"]: int(i) for s, i in zip(gt_segments, rng.choice(BIG_IDS, size=len(gt_segments), replace=False))}
    out = np.zeros_like(pred)
    pred_segments = []
    for s in gt_segments:
        category = s["category_id"]
        if category in (7, 9) and rng.random() < 0.2:
            category = 16 - category  # person <-> car
        if category in (7, 9) and rng.random() < 0.1:
            out[pred == s["id"]] = renumber[gt_segments[0]["id"]]  # merged into the sky
            continue
        out[pred == s["id"]] = renumber[s["id"]]
        pred_segments.append({"id": renumber[s["id"]], "category_id": category})
    listed = {s["id"] for s in pred_segments}
    out[~np.isin(out, list(listed))] = 0
    present = set(np.unique(out).tolist())
    return gt, gt_segments, out, [s for s in pred_segments if s["id"] in present]


def exact_half_image():
    """A thing whose prediction has IoU exactly 0.5 with it (6 + 6 - 4 = 8 pixels of
    union): not a match. And one at 4/7 > 0.5 thanks to void taken out of the union."""
    gt = np.full((8, 8), 100, np.int64)  # road
    gt[1:3, 1:4] = (1 << 22) + 1  # person, 6 px
    gt[5:7, 1:4] = (1 << 23) + 2  # car, 6 px
    gt[5:7, 4] = 0  # void beside the car
    pred = np.full((8, 8), 200, np.int64)
    pred[1:3, 2:5] = (1 << 24) - 2  # 4 px on the person, 2 beside: IoU 4 / 8
    pred[5:7, 2:5] = (1 << 24) - 3  # 4 px on the car, 2 on void: IoU 4 / (6 + 6 - 4 - 2) = 0.67
    gt_segments = [{"id": 100, "category_id": 21, "iscrowd": 0}, {"id": (1 << 22) + 1, "category_id": 7, "iscrowd": 0},
                   {"id": (1 << 23) + 2, "category_id": 9, "iscrowd": 0}]
    gt_segments = [s | {"area": int((gt == s["id"]).sum())} for s in gt_segments]
    pred_segments = [{"id": 200, "category_id": 21}, {"id": (1 << 24) - 2, "category_id": 7}, {"id": (1 << 24) - 3, "category_id": 9}]
    return gt, gt_segments, pred, pred_segments


def reference_pq(images):
    """COCO's rules, segment by segment: {category: [iou_sum, tp, fp, fn]}."""
    stats = {c["id"]: [0.0, 0, 0, 0] for c in CATEGORIES}
    for gt, gt_segments, pred, pred_segments in images:
        void = gt == 0
        matched_gt, matched_pred = set(), set()
        for g in gt_segments:
            if g["iscrowd"]:
                continue
            for p in pred_segments:
                if p["category_id"] != g["category_id"]:
                    continue
                g_mask, p_mask = gt == g["id"], pred == p["id"]
                inter = int((g_mask & p_mask).sum())
                union = g["area"] + int(p_mask.sum()) - inter - int((p_mask & void).sum())
                if inter and inter / union > 0.5:
                    stats[g["category_id"]][0] += inter / union
                    stats[g["category_id"]][1] += 1
                    matched_gt.add(g["id"])
                    matched_pred.add(p["id"])
        crowd = {g["category_id"]: g["id"] for g in gt_segments if g["iscrowd"] and g["id"] not in matched_gt}
        for g in gt_segments:
            if not g["iscrowd"] and g["id"] not in matched_gt:
                stats[g["category_id"]][3] += 1
        for p in pred_segments:
            if p["id"] in matched_pred:
                continue
            p_mask = pred == p["id"]
            ignored = (p_mask & void) | (p_mask & (gt == crowd.get(p["category_id"], -1)))
            if ignored.sum() / p_mask.sum() <= 0.5:
                stats[p["category_id"]][2] += 1
    return stats


def reference_summary(stats, things):
    per = {}
    for c, (iou, tp, fp, fn) in stats.items():
        if tp + fp + fn:
            per[c] = (100 * iou / (tp + fp / 2 + fn / 2), 100 * iou / tp if tp else 0.0, 100 * tp / (tp + fp / 2 + fn / 2))
    out = {}
    for name, keep in (("All", lambda c: True), ("Things", lambda c: things[c]), ("Stuff", lambda c: not things[c])):
        rows = [v for c, v in per.items() if keep(c)]
        out[name] = [sum(r[i] for r in rows) / len(rows) for i in range(3)] if rows else [0.0, 0.0, 0.0]
    return per, out


def write_split(root: Path, images, mangle=None):
    """Ground truth and predictions in COCO panoptic format under root."""
    (root / "gt").mkdir(parents=True)
    (root / "pred").mkdir()
    gt_json = {"categories": CATEGORIES, "images": [], "annotations": []}
    pred_json = {"annotations": []}
    for index, (gt, gt_segments, pred, pred_segments) in enumerate(images):
        write_png(root / "gt" / f"{index:04d}.png", gt)
        write_png(root / "pred" / f"{index:04d}.png", pred)
        gt_json["images"].append({"id": 1000 + index, "file_name": f"{index:04d}.jpg", "height": gt.shape[0], "width": gt.shape[1]})
        gt_json["annotations"].append({"image_id": 1000 + index, "file_name": f"{index:04d}.png", "segments_info": gt_segments})
        pred_json["annotations"].append({"image_id": 1000 + index, "file_name": f"{index:04d}.png", "segments_info": pred_segments})
    if mangle:
        mangle(pred_json)
    (root / "gt.json").write_text(json.dumps(gt_json))
    (root / "pred.json").write_text(json.dumps(pred_json))
    return ["--annotations", str(root / "gt.json"), "--panoptic-masks", str(root / "gt"),
            "--predictions", str(root / "pred.json"), "--prediction-masks", str(root / "pred")]


def test_saved_predictions_score_as_coco_rules_say(tmp_path, capsys):
    rng = np.random.default_rng(5)
    images = [random_image(rng) for _ in range(25)] + [exact_half_image()]
    assert any(s["iscrowd"] for _, gts, _, _ in images for s in gts) and any((gt == 0).any() for gt, *_ in images)
    args = write_split(tmp_path, images)
    assert main(args + ["--json", str(tmp_path / "out.json")]) == 0
    printed = capsys.readouterr().out
    assert "(percent)" in printed and "person" in printed
    result = json.loads((tmp_path / "out.json").read_text())
    things = {c["id"]: bool(c["isthing"]) for c in CATEGORIES}
    stats = reference_pq(images)
    per, summary = reference_summary(stats, things)
    assert result["unit"] == "percent"
    for name in ("All", "Things", "Stuff"):
        assert [result[name][k] for k in ("pq", "sq", "rq")] == pytest.approx(summary[name], abs=1e-9), name
    for row in result["per_category"]:
        _, tp, fp, fn = stats[row["id"]]
        assert (row["tp"], row["fp"], row["fn"]) == (tp, fp, fn), row["name"]
        assert [row["pq"], row["sq"], row["rq"]] == pytest.approx(list(per[row["id"]]), abs=1e-9)


def test_iou_of_exactly_one_half_is_no_match(tmp_path):
    args = write_split(tmp_path, [exact_half_image()])
    assert main(args + ["--json", str(tmp_path / "out.json")]) == 0
    rows = {r["name"]: r for r in json.loads((tmp_path / "out.json").read_text())["per_category"]}
    assert (rows["person"]["tp"], rows["person"]["fp"], rows["person"]["fn"]) == (0, 1, 1)
    assert rows["car"]["tp"] == 1 and rows["car"]["sq"] == pytest.approx(100 * 4 / 6)


def test_miou_gives_crowd_pixels_their_category(tmp_path):
    """As the standard panoptic-to-semantic conversions do: a crowd region predicted as its
    class is right, not ignored."""
    gt = np.full((4, 4), 5, np.int64)
    gt[:, 2:] = 6
    pred = np.full((4, 4), 8, np.int64)
    gt_segments = [{"id": 5, "category_id": 30, "iscrowd": 0, "area": 8}, {"id": 6, "category_id": 7, "iscrowd": 1, "area": 8}]
    args = write_split(tmp_path, [(gt, gt_segments, pred, [{"id": 8, "category_id": 7}])])
    assert main(args + ["--json", str(tmp_path / "out.json")]) == 0
    rows = {r["name"]: r for r in json.loads((tmp_path / "out.json").read_text())["per_category"]}
    assert rows["person"]["iou"] == pytest.approx(50.0)  # crowd pixels count: 8 right of 16 predicted
    assert rows["sky"]["iou"] == pytest.approx(0.0) and rows["car"]["iou"] is None


@pytest.mark.parametrize("mangle, message", [
    (lambda j: j["annotations"][0]["segments_info"].pop(), "in the PNG but not in the JSON"),
    (lambda j: j["annotations"][0]["segments_info"].append({"id": 4242, "category_id": 7}), "in the JSON but not in the PNG"),
    (lambda j: j["annotations"][0]["segments_info"][0].update(category_id=99), "category_id 99"),
    (lambda j: j["annotations"].pop(), "no prediction for the image with id 1001"),
], ids=["png-only", "json-only", "unknown-category", "missing-image"])
def test_malformed_predictions_are_refused_naming_file_and_segment(tmp_path, capsys, mangle, message):
    rng = np.random.default_rng(2)
    args = write_split(tmp_path, [random_image(rng), random_image(rng)], mangle)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err, err
    if "image with id" not in message:
        assert "0000.png" in err and "image id 1000" in err, err
