"""COCO-panoptic-format datasets (COCO, ADE20K panoptic, your own): reading, and the
large-scale-jitter augmentation of the EOV-Seg recipe."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset


@dataclass(frozen=True)
class Category:
    id: int  # dataset category id
    name: str  # names, comma-separated synonyms allowed
    is_thing: bool


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG encoding: id = R + 256 G + 256^2 B."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def read_panoptic_png(path: str | Path) -> np.ndarray:
    """The id map of a COCO panoptic PNG (24-bit ids)."""
    png = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if png is None:
        raise FileNotFoundError(f"cannot read {path}")
    return rgb_to_id(cv2.cvtColor(png, cv2.COLOR_BGR2RGB))


class PanopticDataset(Dataset):
    """One item: image [3, H, W] uint8, masks [N, H, W] bool, labels [N] (contiguous class
    index), is_crowd [N]. Images without annotated segments are left out."""

    def __init__(self, annotations: str | Path, images: str | Path | None, panoptic_masks: str | Path, transform=None) -> None:
        """images: None where only the ground truth is read (scoring saved predictions)."""
        for path, what in ((annotations, "annotations"), (images, "images folder"), (panoptic_masks, "panoptic masks folder")):
            if path is not None and not Path(path).exists():
                raise FileNotFoundError(
                    f"dataset {what} not found: {path} (see training/README.md for the COCO panoptic layout, "
                    "or write a small synthetic set with ovseg-synthetic)"
                )
        try:
            spec = json.loads(Path(annotations).read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{annotations} is not a COCO panoptic JSON: {exc}") from exc
        self.categories = [Category(c["id"], c["name"], bool(c.get("isthing", 0))) for c in spec["categories"]]
        self.contiguous = {c.id: i for i, c in enumerate(self.categories)}
        files = {image["id"]: image["file_name"] for image in spec["images"]}
        self.annotations = spec["annotations"]  # every image, as evaluation takes them
        self.records = [a for a in self.annotations if a.get("segments_info")]
        self.images_dir, self.masks_dir = None if images is None else Path(images), Path(panoptic_masks)
        self.files = files
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.categories]

    @property
    def thing_classes(self) -> list[bool]:
        return [c.is_thing for c in self.categories]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        """(RGB image, panoptic id map, segments_info) as stored."""
        record = self.records[index]
        image_file = self.images_dir / self.files[record["image_id"]]
        bgr = cv2.imread(str(image_file), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"cannot read {image_file}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), read_panoptic_png(self.masks_dir / record["file_name"]), record["segments_info"]

    def __getitem__(self, index: int) -> dict:
        image, ids, segments = self.load(index)
        masks = np.stack([ids == s["id"] for s in segments]) if segments else np.zeros((0, *ids.shape), bool)
        labels = np.array([self.contiguous[s["category_id"]] for s in segments], dtype=np.int64)
        crowd = np.array([bool(s.get("iscrowd", 0)) for s in segments], dtype=bool)
        if self.transform is not None:
            image, masks = self.transform(image, masks)
        keep = masks.reshape(len(masks), -1).any(1) & ~crowd if len(masks) else np.zeros(0, bool)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1),
            "masks": torch.from_numpy(masks[keep]),
            "labels": torch.from_numpy(labels[keep]),
        }


class LargeScaleJitter:
    """Resize by a random factor of `size` (min_scale..max_scale, aspect kept), random
    crop or zero-pad to size x size, random horizontal flip; masks follow exactly."""

    def __init__(self, size: int = 1024, min_scale: float = 0.1, max_scale: float = 2.0, flip: bool = True, seed: int | None = None) -> None:
        self.size, self.min_scale, self.max_scale, self.flip = size, min_scale, max_scale, flip
        self.rng = np.random.default_rng(seed)

    def __call__(self, image: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        height, width = image.shape[:2]
        scale = rng.uniform(self.min_scale, self.max_scale) * self.size / max(height, width)
        new_h, new_w = max(1, int(round(height * scale))), max(1, int(round(width * scale)))
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        if len(masks):
            masks = np.stack([cv2.resize(m.astype(np.uint8), (new_w, new_h), interpolation=cv2.INTER_NEAREST) for m in masks]).astype(bool)
        else:
            masks = np.zeros((0, new_h, new_w), bool)
        top = int(rng.integers(0, max(new_h - self.size, 0) + 1))
        left = int(rng.integers(0, max(new_w - self.size, 0) + 1))
        image, masks = image[top : top + self.size, left : left + self.size], masks[:, top : top + self.size, left : left + self.size]
        out_image = np.zeros((self.size, self.size, 3), np.uint8)
        out_masks = np.zeros((len(masks), self.size, self.size), bool)
        out_image[: image.shape[0], : image.shape[1]] = image
        out_masks[:, : masks.shape[1], : masks.shape[2]] = masks
        if self.flip and rng.random() < 0.5:
            out_image, out_masks = out_image[:, ::-1], out_masks[:, :, ::-1]
        return out_image, out_masks


def collate(items: list[dict]) -> dict:
    """Images stacked (all the same size after jitter); masks and labels kept per image."""
    return {
        "images": torch.stack([item["image"] for item in items]),
        "masks": [item["masks"] for item in items],
        "labels": [item["labels"] for item in items],
    }
