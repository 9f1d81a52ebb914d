"""Panoptic quality (PQ, SQ, RQ; all / things / stuff) on COCO-panoptic-format ground
truth, and mIoU of the semantic maps, using the core predictor (so the same
post-processing as the node)."""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

OFFSET = 1 << 20  # larger than any segment id


@dataclass
class PQStat:
    """Per category sums, in the COCO panopticapi convention."""

    iou: dict = field(default_factory=lambda: defaultdict(float))
    tp: dict = field(default_factory=lambda: defaultdict(int))
    fp: dict = field(default_factory=lambda: defaultdict(int))
    fn: dict = field(default_factory=lambda: defaultdict(int))

    def add_image(self, gt_ids: np.ndarray, gt_segments: list[dict], pred_ids: np.ndarray, pred_segments: list[dict]) -> None:
        """Segments: {"id", "category_id", "iscrowd" (gt only)}; id 0 / unlisted ids are void."""
        gt_info = {s["id"]: s for s in gt_segments}
        pred_info = {s["id"]: s for s in pred_segments}
        gt_ids = np.where(np.isin(gt_ids, list(gt_info)), gt_ids, 0).astype(np.int64)
        pred_ids = np.where(np.isin(pred_ids, list(pred_info)), pred_ids, 0).astype(np.int64)
        gt_area = dict(zip(*np.unique(gt_ids, return_counts=True)))
        pred_area = dict(zip(*np.unique(pred_ids, return_counts=True)))
        pairs, counts = np.unique(gt_ids * OFFSET + pred_ids, return_counts=True)
        intersection = {(int(p // OFFSET), int(p % OFFSET)): int(c) for p, c in zip(pairs, counts)}

        matched_gt, matched_pred = set(), set()
        for (g, p), inter in intersection.items():
            if g == 0 or p == 0 or gt_info[g].get("iscrowd", 0):
                continue
            if gt_info[g]["category_id"] != pred_info[p]["category_id"]:
                continue
            union = pred_area[p] + gt_area[g] - inter - intersection.get((0, p), 0)
            iou = inter / union
            if iou > 0.5:
                category = gt_info[g]["category_id"]
                self.tp[category] += 1
                self.iou[category] += iou
                matched_gt.add(g)
                matched_pred.add(p)

        crowd_by_category = {}
        for g, info in gt_info.items():
            if info.get("iscrowd", 0):
                crowd_by_category[info["category_id"]] = g
            elif g not in matched_gt:
                self.fn[info["category_id"]] += 1
        for p, info in pred_info.items():
            if p in matched_pred or p not in pred_area:
                continue
            ignored = intersection.get((0, p), 0)
            crowd = crowd_by_category.get(info["category_id"])
            if crowd is not None:
                ignored += intersection.get((crowd, p), 0)
            if ignored / pred_area[p] > 0.5:
                continue
            self.fp[info["category_id"]] += 1

    def summary(self, categories: dict[int, bool]) -> dict[str, dict[str, float]]:
        """{"All"|"Things"|"Stuff": {"pq", "sq", "rq", "n"}} in percent; categories: id -> is_thing."""
        result = {}
        for name, keep in (("All", lambda t: True), ("Things", lambda t: t), ("Stuff", lambda t: not t)):
            pq = sq = rq = 0.0
            n = 0
            for category, is_thing in categories.items():
                if not keep(is_thing):
                    continue
                tp, fp, fn = self.tp[category], self.fp[category], self.fn[category]
                if tp + fp + fn == 0:
                    continue
                n += 1
                pq += self.iou[category] / (tp + 0.5 * fp + 0.5 * fn)
                sq += self.iou[category] / tp if tp else 0.0
                rq += tp / (tp + 0.5 * fp + 0.5 * fn)
            result[name] = {"pq": 100 * pq / n if n else 0.0, "sq": 100 * sq / n if n else 0.0, "rq": 100 * rq / n if n else 0.0, "n": n}
        return result


class SemanticIoU:
    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.confusion = np.zeros((num_classes, num_classes + 1), np.int64)  # last column: no class predicted

    def add(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Class index maps; negative gt values are ignored."""
        valid = gt >= 0
        pred = np.where(pred < 0, self.num_classes, pred)  # "no class": counts as wrong
        index = gt[valid].astype(np.int64) * (self.num_classes + 1) + pred[valid]
        counts = np.bincount(index, minlength=self.num_classes * (self.num_classes + 1))
        self.confusion += counts.reshape(self.num_classes, self.num_classes + 1)

    def miou(self) -> float:
        inter = np.diag(self.confusion[:, : self.num_classes]).astype(np.float64)
        gt_total = self.confusion.sum(1)
        union = gt_total + self.confusion[:, : self.num_classes].sum(0) - inter
        present = gt_total > 0
        return float(100 * (inter[present] / np.maximum(union[present], 1)).mean()) if present.any() else 0.0


def evaluate(predictor, dataset, limit: int | None = None, progress: bool = False) -> dict:
    """PQ (all/things/stuff) and mIoU of `predictor` (vocabulary = the dataset's classes)."""
    from tqdm import tqdm

    predictor.set_vocabulary(dataset.class_names, [i for i, thing in enumerate(dataset.thing_classes) if thing])
    categories = {c.id: c.is_thing for c in dataset.categories}
    stat, semantic = PQStat(), SemanticIoU(len(dataset.categories))
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for index in tqdm(range(count), disable=not progress, desc="evaluating"):
        image, gt_ids, gt_segments = dataset.load(index)
        result = predictor(image)
        pred_segments = [{"id": s.id, "category_id": dataset.categories[s.category].id} for s in result.segments]
        stat.add_image(gt_ids, gt_segments, result.panoptic, pred_segments)
        gt_semantic = np.full(gt_ids.shape, -1, np.int64)
        for s in gt_segments:
            if not s.get("iscrowd", 0):
                gt_semantic[gt_ids == s["id"]] = dataset.contiguous[s["category_id"]]
        semantic.add(gt_semantic, result.semantic)
    return {**stat.summary(categories), "mIoU": semantic.miou(), "images": count}


def main(argv: list[str] | None = None) -> int:
    from ovseg_ros.config import InferenceConfig
    from ovseg_ros.predictor import Predictor
    from ovseg_training.data import PanopticDataset

    parser = argparse.ArgumentParser(description="PQ / mIoU of a checkpoint on a COCO-panoptic-format split.")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--variant", default=None, help="default: the checkpoint's")
    parser.add_argument("--annotations", required=True, help="panoptic_val2017.json")
    parser.add_argument("--images", required=True)
    parser.add_argument("--panoptic-masks", required=True)
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    try:  # dataset and checkpoint are checked before the model is built
        dataset = PanopticDataset(args.annotations, args.images, args.panoptic_masks)
        predictor = Predictor.from_checkpoint(args.checkpoint, args.variant, args.device, InferenceConfig())
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = evaluate(predictor, dataset, args.limit, progress=True)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0
