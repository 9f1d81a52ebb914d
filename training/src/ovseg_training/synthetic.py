"""A tiny synthetic dataset in COCO panoptic format (shapes on textures), for tests and
smoke runs: stuff = sky, grass, road bands; things = red circles, blue squares,
yellow triangles, a few per image, sometimes overlapping."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

CATEGORIES = [
    {"id": 1, "name": "red ball, ball", "isthing": 1, "color": (220, 40, 40)},
    {"id": 2, "name": "blue box, box", "isthing": 1, "color": (40, 60, 220)},
    {"id": 3, "name": "yellow cone, cone", "isthing": 1, "color": (230, 210, 40)},
    {"id": 4, "name": "sky", "isthing": 0, "color": (140, 190, 240)},
    {"id": 5, "name": "grass, lawn", "isthing": 0, "color": (60, 150, 60)},
    {"id": 6, "name": "road", "isthing": 0, "color": (90, 90, 90)},
]


def _textured(shape, color, rng, amount=18.0) -> np.ndarray:
    return np.clip(np.asarray(color, np.float32) + rng.normal(0, amount, shape), 0, 255)


def make_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    image = np.zeros((size, size, 3), np.float32)
    ids = np.zeros((size, size), np.int64)
    segments, next_id = [], 1
    horizon = int(size * rng.uniform(0.3, 0.5))
    split = int(size * rng.uniform(0.6, 0.8))
    bands = [(4, 0, horizon), (5, horizon, split), (6, split, size)]
    for category_id, y0, y1 in bands:
        category = CATEGORIES[category_id - 1]
        image[y0:y1] = _textured((y1 - y0, size, 3), category["color"], rng)
        ids[y0:y1] = next_id
        segments.append({"id": next_id, "category_id": category_id, "iscrowd": 0})
        next_id += 1
    for _ in range(int(rng.integers(1, 4))):
        category_id = int(rng.integers(1, 4))
        mask = np.zeros((size, size), np.uint8)
        r = int(size * rng.uniform(0.08, 0.16))
        cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
        if category_id == 1:
            cv2.circle(mask, (cx, cy), r, 1, -1)
        elif category_id == 2:
            cv2.rectangle(mask, (cx - r, cy - r), (cx + r, cy + r), 1, -1)
        else:
            cv2.fillPoly(mask, [np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)], 1)
        inside = mask.astype(bool)
        image[inside] = _textured((int(inside.sum()), 3), CATEGORIES[category_id - 1]["color"], rng)
        ids[inside] = next_id
        segments.append({"id": next_id, "category_id": category_id, "iscrowd": 0})
        next_id += 1
    present = set(np.unique(ids).tolist())
    segments = [s for s in segments if s["id"] in present]  # fully covered shapes vanish
    for s in segments:
        ys, xs = np.nonzero(ids == s["id"])
        s["area"] = int(len(xs))
        s["bbox"] = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
    return np.clip(image, 0, 255).astype(np.uint8), ids, segments


def write_dataset(root: str | Path, num_train: int = 64, num_val: int = 16, size: int = 64, seed: int = 0) -> Path:
    """root/{train,val}/images/*.png, root/{train,val}/panoptic/*.png, root/{train,val}.json."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    categories = [{k: v for k, v in c.items() if k != "color"} for c in CATEGORIES]
    for split, count in (("train", num_train), ("val", num_val)):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "panoptic").mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            image, ids, segments = make_image(rng, size)
            name = f"{split}_{index:05d}"
            cv2.imwrite(str(root / split / "images" / f"{name}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            png = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
            cv2.imwrite(str(root / split / "panoptic" / f"{name}.png"), cv2.cvtColor(png, cv2.COLOR_RGB2BGR))
            images.append({"id": index, "file_name": f"{name}.png", "height": size, "width": size})
            annotations.append({"image_id": index, "file_name": f"{name}.png", "segments_info": segments})
        (root / f"{split}.json").write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a tiny synthetic COCO-panoptic dataset.")
    parser.add_argument("root")
    parser.add_argument("--train", type=int, default=64)
    parser.add_argument("--val", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_dataset(args.root, args.train, args.val, args.size, args.seed))
    return 0
