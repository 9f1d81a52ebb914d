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

OFFSET = 1 << 24  # COCO panoptic ids are 24-bit (R + 256 G + 256^2 B): gt * OFFSET + pred never collides
VOID = 0


class PredictionError(ValueError):
    """A malformed prediction: names the image and the segment, as panopticapi does."""


@dataclass
class PQStat:
    """Per category sums, by COCO panopticapi's rules (panopticapi/evaluation.py,
    pq_compute_single_core): a match is IoU > 0.5 (strictly) of a gt segment and a
    prediction of its category, the union less the prediction's pixels on gt void (id 0);
    crowd gt is never matched, and an unmatched prediction with over half its pixels on
    void or on a crowd region of its category is not a false positive. Gt areas are the
    JSON's `area` where given (as panopticapi takes them), else pixel counts."""

    iou: dict = field(default_factory=lambda: defaultdict(float))
    tp: dict = field(default_factory=lambda: defaultdict(int))
    fp: dict = field(default_factory=lambda: defaultdict(int))
    fn: dict = field(default_factory=lambda: defaultdict(int))

    def add_image(self, gt_ids: np.ndarray, gt_segments: list[dict], pred_ids: np.ndarray, pred_segments: list[dict],
                  categories=None, image: str = "") -> None:
        """Segments: {"id", "category_id", "iscrowd" and "area" (gt, optional)}. The
        prediction must list every id its map has but 0 (void), and only those, each of a
        category in `categories` (where given); else PredictionError naming `image`."""
        if np.shape(gt_ids) != np.shape(pred_ids):
            raise PredictionError(f"{image}: the prediction is {np.shape(pred_ids)[:2]}, the ground truth {np.shape(gt_ids)[:2]}")
        gt_info = {int(s["id"]): s for s in gt_segments}
        pred_info = {int(s["id"]): s for s in pred_segments}
        # one pass over the pixels: every (gt, prediction) pair's count; areas are its sums
        pairs, counts = np.unique(np.asarray(gt_ids, np.int64) * OFFSET + np.asarray(pred_ids, np.int64), return_counts=True)
        intersection = {(int(p // OFFSET), int(p % OFFSET)): int(c) for p, c in zip(pairs, counts)}
        pred_area, gt_pixels = defaultdict(int), defaultdict(int)
        for (g, p), inter in intersection.items():
            pred_area[p] += inter
            gt_pixels[g] += inter
        unlisted = sorted(set(pred_area) - set(pred_info) - {VOID})
        if unlisted:
            raise PredictionError(f"{image}: segment ids {unlisted} are in the PNG but not in the JSON")
        absent = sorted(set(pred_info) - set(pred_area))
        if absent:
            raise PredictionError(f"{image}: segment ids {absent} are in the JSON but not in the PNG")
        if categories is not None:
            unknown = [(i, s["category_id"]) for i, s in pred_info.items() if s["category_id"] not in categories]
            if unknown:
                raise PredictionError(f"{image}: segment {unknown[0][0]} has category_id {unknown[0][1]}, "
                                      "which the ground truth's categories do not have")
        gt_area = {g: int(info.get("area", gt_pixels.get(g, 0))) for g, info in gt_info.items()}

        matched_gt, matched_pred = set(), set()
        for (g, p), inter in intersection.items():
            if g not in gt_info or p not in pred_info or gt_info[g].get("iscrowd", 0):
                continue
            if gt_info[g]["category_id"] != pred_info[p]["category_id"]:
                continue
            union = pred_area[p] + gt_area[g] - inter - intersection.get((VOID, p), 0)
            iou = inter / union
            if iou > 0.5:
                category = gt_info[g]["category_id"]
                self.tp[category] += 1
                self.iou[category] += iou
                matched_gt.add(g)
                matched_pred.add(p)

        crowd_by_category = {}
        for g, info in gt_info.items():
            if g in matched_gt:
                continue
            if info.get("iscrowd", 0):
                crowd_by_category[info["category_id"]] = g
            else:
                self.fn[info["category_id"]] += 1
        for p, info in pred_info.items():
            if p in matched_pred:
                continue
            ignored = intersection.get((VOID, p), 0)
            crowd = crowd_by_category.get(info["category_id"])
            if crowd is not None:
                ignored += intersection.get((crowd, p), 0)
            if ignored / pred_area[p] > 0.5:
                continue
            self.fp[info["category_id"]] += 1

    def per_category(self, categories) -> dict[int, dict[str, float]]:
        """{category id: {"pq", "sq", "rq" (percent), "tp", "fp", "fn"}}; categories without
        gt or predictions get None for pq/sq/rq (they are left out of the averages)."""
        result = {}
        for category in categories:
            tp, fp, fn = self.tp[category], self.fp[category], self.fn[category]
            if tp + fp + fn == 0:
                result[category] = {"pq": None, "sq": None, "rq": None, "tp": 0, "fp": 0, "fn": 0}
                continue
            iou = self.iou[category]
            result[category] = {"pq": 100 * iou / (tp + 0.5 * fp + 0.5 * fn), "sq": 100 * iou / tp if tp else 0.0,
                                "rq": 100 * tp / (tp + 0.5 * fp + 0.5 * fn), "tp": tp, "fp": fp, "fn": fn}
        return result

    def summary(self, categories: dict[int, bool]) -> dict[str, dict[str, float]]:
        """{"All"|"Things"|"Stuff": {"pq", "sq", "rq", "n"}} in percent; categories: id -> is_thing."""
        rows = self.per_category(categories)
        result = {}
        for name, keep in (("All", lambda t: True), ("Things", lambda t: t), ("Stuff", lambda t: not t)):
            scored = [rows[c] for c, is_thing in categories.items() if keep(is_thing) and rows[c]["pq"] is not None]
            n = len(scored)
            result[name] = {key: sum(r[key] for r in scored) / n if n else 0.0 for key in ("pq", "sq", "rq")} | {"n": n}
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

    def ious(self) -> np.ndarray:
        """Per class IoU in percent (NaN for classes absent from the ground truth)."""
        inter = np.diag(self.confusion[:, : self.num_classes]).astype(np.float64)
        gt_total = self.confusion.sum(1)
        union = gt_total + self.confusion[:, : self.num_classes].sum(0) - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(gt_total > 0, 100 * inter / np.maximum(union, 1), np.nan)

    def miou(self) -> float:
        ious = self.ious()
        return float(np.nanmean(ious)) if np.isfinite(ious).any() else 0.0


def semantic_map(ids: np.ndarray, segments: list[dict], contiguous: dict[int, int]) -> np.ndarray:
    """Class index per pixel from a panoptic map, -1 (ignored) where no listed segment is:
    every listed segment gives its pixels its category, crowd regions included, as the
    standard conversions do (panopticapi's converters/panoptic2semantic_segmentation.py;
    MaskFormer's datasets/prepare_coco_semantic_annos_from_panoptic_annos.py)."""
    ids = np.asarray(ids, np.int64)
    lookup_ids = np.array([int(s["id"]) for s in segments], np.int64)
    classes = np.array([contiguous.get(s["category_id"], -1) for s in segments], np.int64)
    if not len(lookup_ids):
        return np.full(ids.shape, -1, np.int64)
    order = np.argsort(lookup_ids)
    lookup_ids, classes = lookup_ids[order], classes[order]
    where = np.clip(np.searchsorted(lookup_ids, ids), 0, len(lookup_ids) - 1)
    return np.where(lookup_ids[where] == ids, classes[where], -1)


class Scores:
    """PQ and mIoU accumulated image by image; `result()` is what ovseg-eval prints."""

    def __init__(self, categories: list) -> None:
        self.categories = categories  # data.Category, in the dataset's order
        self.contiguous = {c.id: i for i, c in enumerate(categories)}
        self.pq, self.semantic, self.images = PQStat(), SemanticIoU(len(categories)), 0

    def add(self, gt_ids, gt_segments, pred_ids, pred_segments, image: str = "", pred_semantic=None) -> None:
        """pred_semantic: the model's own semantic map where it has one; else the
        prediction's panoptic map read as classes (its void pixels count as wrong)."""
        self.pq.add_image(gt_ids, gt_segments, pred_ids, pred_segments, self.contiguous, image)
        if pred_semantic is None:
            pred_semantic = semantic_map(pred_ids, pred_segments, self.contiguous)
        self.semantic.add(semantic_map(gt_ids, gt_segments, self.contiguous), pred_semantic)
        self.images += 1

    def result(self) -> dict:
        things = {c.id: c.is_thing for c in self.categories}
        rows = self.pq.per_category(things)
        ious = self.semantic.ious()
        per_category = [{"id": c.id, "name": c.name, "isthing": c.is_thing, **rows[c.id],
                         "iou": None if np.isnan(ious[i]) else float(ious[i])} for i, c in enumerate(self.categories)]
        return {"unit": "percent", **self.pq.summary(things), "mIoU": self.semantic.miou(), "images": self.images,
                "per_category": per_category}


def format_table(result: dict) -> str:
    """The summary and the per-category table, in percent."""
    def cell(value):
        return "    -" if value is None else f"{value:5.1f}"

    lines = ["(percent)   PQ     SQ     RQ      N"]
    lines += [f"{name:<8} {cell(result[name]['pq'])}  {cell(result[name]['sq'])}  {cell(result[name]['rq'])}  {result[name]['n']:5d}"
              for name in ("All", "Things", "Stuff")]
    lines += [f"mIoU {result['mIoU']:.1f} over {result['images']} images", "",
              f"{'category':<28} {'kind':<5}    PQ     SQ     RQ    IoU    TP    FP    FN"]
    for row in result["per_category"]:
        lines.append(f"{row['name'][:28]:<28} {'thing' if row['isthing'] else 'stuff':<5}  {cell(row['pq'])}  {cell(row['sq'])}  "
                     f"{cell(row['rq'])}  {cell(row['iou'])}  {row['tp']:4d}  {row['fp']:4d}  {row['fn']:4d}")
    return "\n".join(lines)


def score_predictions(dataset, predictions: str | Path, prediction_masks: str | Path) -> dict:
    """Scores COCO-panoptic-format predictions (panopticapi's results format: a JSON with
    "annotations", one per image, matched to the ground truth by image_id, and a folder of
    id PNGs) against `dataset`'s ground truth; no model, no images."""
    from ovseg_training.data import read_panoptic_png

    try:
        spec = json.loads(Path(predictions).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PredictionError(f"cannot read the predictions {predictions}: {exc}") from exc
    records = spec.get("annotations") if isinstance(spec, dict) else spec
    if not isinstance(records, list):
        raise PredictionError(f"{predictions}: expected COCO panoptic results ({{\"annotations\": [...]}})")
    by_image = {}
    for record in records:
        if "image_id" not in record or "file_name" not in record or "segments_info" not in record:
            raise PredictionError(f"{predictions}: an annotation lacks image_id, file_name or segments_info: "
                                  f"{json.dumps(record)[:120]}")
        by_image[record["image_id"]] = record
    scores = Scores(dataset.categories)
    for gt in dataset.records:
        record = by_image.get(gt["image_id"])
        if record is None:
            raise PredictionError(f"{predictions}: no prediction for the image with id {gt['image_id']}")
        png = Path(prediction_masks) / record["file_name"]
        try:
            pred_ids = read_panoptic_png(png)
        except FileNotFoundError as exc:
            raise PredictionError(f"{exc} (the prediction for image id {gt['image_id']})") from exc
        scores.add(read_panoptic_png(dataset.masks_dir / gt["file_name"]), gt["segments_info"], pred_ids,
                   record["segments_info"], image=f"{png} (image id {gt['image_id']})")
    return scores.result()


def evaluate(predictor, dataset, limit: int | None = None, progress: bool = False) -> dict:
    """PQ (all/things/stuff), mIoU and the per-category table of `predictor`
    (vocabulary = the dataset's classes), in percent."""
    from tqdm import tqdm

    predictor.set_vocabulary(dataset.class_names, [i for i, thing in enumerate(dataset.thing_classes) if thing])
    scores = Scores(dataset.categories)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for index in tqdm(range(count), disable=not progress, desc="evaluating"):
        image, gt_ids, gt_segments = dataset.load(index)
        result = predictor(image)
        pred_segments = [{"id": s.id, "category_id": dataset.categories[s.category].id} for s in result.segments if s.area > 0]
        scores.add(gt_ids, gt_segments, result.panoptic, pred_segments, image=dataset.records[index]["file_name"],
                   pred_semantic=result.semantic)
    return scores.result()


def main(argv: list[str] | None = None) -> int:
    from ovseg_training.config import EvalConfig
    from ovseg_training.data import CLASS_NAMES, PanopticDataset

    parser = argparse.ArgumentParser(
        description="PQ / SQ / RQ (all, things, stuff; per category) and mIoU, in percent, on a COCO-panoptic-format "
        "split: of a checkpoint (--checkpoint, runs the model on --images) or of saved COCO-format predictions "
        "(--predictions JSON --prediction-masks DIR, no model).")
    parser.add_argument("--config", help="a JSON of the split, class names and test settings (training/configs/eval_*.json); "
                        "the options below override it")
    parser.add_argument("--annotations", help="ground truth: panoptic_val2017.json")
    parser.add_argument("--panoptic-masks", help="ground truth: the folder of its PNGs")
    parser.add_argument("--class-names", choices=CLASS_NAMES, help="the classes' text (default: auto, see training/README.md)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a checkpoint to run on --images")
    source.add_argument("--predictions", help="COCO panoptic results JSON ({\"annotations\": [...]}, matched by image_id)")
    parser.add_argument("--prediction-masks", help="the folder of the predictions' PNGs (with --predictions)")
    parser.add_argument("--images", help="the images (with --checkpoint)")
    parser.add_argument("--variant", default=None, help="default: the checkpoint's")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    parser.add_argument("--limit", type=int, help="the first N images only (with --checkpoint)")
    parser.add_argument("--json", type=Path, help="also write the result (summary and per-category rows) here")
    args = parser.parse_args(argv)
    try:
        config = EvalConfig.from_file(args.config) if args.config else EvalConfig()
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.annotations = args.annotations or config.annotations
    args.panoptic_masks = args.panoptic_masks or config.panoptic_masks
    args.images = args.images or config.images or None
    args.class_names = args.class_names or config.class_names
    if not args.annotations or not args.panoptic_masks:
        parser.error("the ground truth is needed: --annotations and --panoptic-masks (or a --config naming them)")
    if args.predictions and not args.prediction_masks:
        parser.error("--predictions needs --prediction-masks (the folder of its PNGs)")
    if args.checkpoint and not args.images:
        parser.error("--checkpoint needs --images")
    try:  # dataset and checkpoint are checked before the model is built
        dataset = PanopticDataset(args.annotations, args.images if args.checkpoint else None, args.panoptic_masks,
                                  class_names=args.class_names)
        if args.predictions:
            result = score_predictions(dataset, args.predictions, args.prediction_masks)
        else:
            from ovseg_ros.config import InferenceConfig
            from ovseg_ros.predictor import Predictor

            predictor = Predictor.from_checkpoint(args.checkpoint, args.variant, args.device, InferenceConfig(**config.inference))
            result = evaluate(predictor, dataset, args.limit, progress=True)
    except (FileNotFoundError, ValueError) as exc:  # PredictionError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0
