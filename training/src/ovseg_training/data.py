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


CLASS_NAMES = ("auto", "json", "coco_published", "ade20k_published")


def published_names(kind: str) -> dict[int, str]:
    """Category id -> the published prompt-engineered names ("name,synonym,..."), as
    EOV-Seg and FC-CLIP train and evaluate with them."""
    if kind == "coco_published":
        from ovseg_ros.coco_classes import PUBLISHED_NAMES

        return PUBLISHED_NAMES
    from ovseg_training.ade20k import ADE20K_CLASSES

    return {i: names for i, (names, _) in enumerate(ADE20K_CLASSES)}


def _is_coco_panoptic(categories: list[dict]) -> bool:
    from ovseg_ros.coco_classes import COCO_PANOPTIC_CLASSES

    return sorted((c["id"], bool(c.get("isthing", 0))) for c in categories) == sorted((i, t) for i, t, _ in COCO_PANOPTIC_CLASSES)


class PanopticDataset(Dataset):
    """One item: image [3, H, W] uint8, masks [N, H, W] bool, labels [N] (contiguous class
    index); crowd segments are not targets. Images without segments are kept (no targets:
    every query learns "no object" there), as the published training keeps them.

    class_names: the classes' text, "json" (the dataset's names), "coco_published" or
    "ade20k_published" (the published prompt-engineered names and synonyms, by category
    id), or "auto": the COCO ones where the categories are COCO panoptic's (ids and
    things), else the JSON's."""

    def __init__(self, annotations: str | Path, images: str | Path | None, panoptic_masks: str | Path, transform=None,
                 class_names: str = "auto") -> None:
        """images: None where only the ground truth is read (scoring saved predictions)."""
        if class_names not in CLASS_NAMES:
            raise ValueError(f"class_names must be one of {', '.join(CLASS_NAMES)}, got {class_names!r}")
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
        if class_names == "auto":
            class_names = "coco_published" if _is_coco_panoptic(spec["categories"]) else "json"
        names = {c["id"]: c["name"] for c in spec["categories"]}
        if class_names != "json":
            published = published_names(class_names)
            missing = sorted(set(names) - set(published))
            if missing:
                raise ValueError(f"class_names {class_names!r}: {annotations} has category ids {missing[:5]} that the "
                                 "published list does not (use \"json\" for the dataset's own names)")
            # a name twice in one class (ADE's "kitchen range") is one text row: the best
            # synonym's score is the same
            names = {i: ",".join(dict.fromkeys(n.strip() for n in published[i].split(","))) for i in names}
        self.class_names_source = class_names
        self.categories = [Category(c["id"], names[c["id"]], bool(c.get("isthing", 0))) for c in spec["categories"]]
        self.contiguous = {c.id: i for i, c in enumerate(self.categories)}
        files = {image["id"]: image["file_name"] for image in spec["images"]}
        self.records = spec["annotations"]  # images without segments too: training and evaluation take every one
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
        """Crowd segments are left out of the targets (as the published mapper does); a
        segment the augmentation crops away stays, with an empty mask."""
        image, ids, segments = self.load(index)
        if self.transform is not None:
            image, ids = self.transform(image, ids)
        segments = [s for s in segments if not s.get("iscrowd", 0)]
        masks = np.stack([ids == s["id"] for s in segments]) if segments else np.zeros((0, *ids.shape), bool)
        labels = np.array([self.contiguous[s["category_id"]] for s in segments], dtype=np.int64)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1),
            "masks": torch.from_numpy(masks),
            "labels": torch.from_numpy(labels),
        }


class LargeScaleJitter:
    """EOV-Seg's COCO augmentation (the "new baseline" mapper it takes from Mask2Former /
    FC-CLIP: detectron2's RandomFlip, ResizeScale, FixedSizeCrop, in that order): a random
    horizontal flip; a resize by a random factor of `size` (min_scale..max_scale, aspect
    kept) with PIL's bilinear filter, which antialiases when shrinking, the labels with
    nearest; a random crop to size x size where larger; padding at the bottom and right
    with grey 128 (the labels with no segment) where smaller. Works on the panoptic id map,
    so masks follow exactly, and one emptied by the crop stays (an all-False mask)."""

    PAD_VALUE = 128

    def __init__(self, size: int = 1024, min_scale: float = 0.1, max_scale: float = 2.0, flip: bool = True, seed: int | None = None) -> None:
        self.size, self.min_scale, self.max_scale, self.flip = size, min_scale, max_scale, flip
        self.rng = np.random.default_rng(seed)

    def __call__(self, image: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8 H x W x 3, id map H x W) -> (size x size x 3, size x size; 0 = none)."""
        from PIL import Image

        rng = self.rng
        if self.flip and rng.random() < 0.5:
            image, ids = image[:, ::-1], ids[:, ::-1]
        height, width = image.shape[:2]
        scale = rng.uniform(self.min_scale, self.max_scale) * self.size / max(height, width)
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((new_w, new_h), Image.BILINEAR))
        ids = np.asarray(Image.fromarray(np.ascontiguousarray(ids, dtype=np.int32)).resize((new_w, new_h), Image.NEAREST))
        along = rng.uniform()  # one draw for both axes, as FixedSizeCrop has it
        top, left = (int(round(max(extent - self.size, 0) * along)) for extent in (new_h, new_w))
        image, ids = image[top : top + self.size, left : left + self.size], ids[top : top + self.size, left : left + self.size]
        out_image = np.full((self.size, self.size, 3), self.PAD_VALUE, np.uint8)
        out_ids = np.zeros((self.size, self.size), np.int32)
        out_image[: image.shape[0], : image.shape[1]] = image
        out_ids[: ids.shape[0], : ids.shape[1]] = ids
        return out_image, out_ids


def collate(items: list[dict]) -> dict:
    """Images stacked (all the same size after jitter); masks and labels kept per image."""
    return {
        "images": torch.stack([item["image"] for item in items]),
        "masks": [item["masks"] for item in items],
        "labels": [item["labels"] for item in items],
    }
