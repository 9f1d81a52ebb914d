from __future__ import annotations

import json

import numpy as np
from training_support import split

from ovseg_training.data import LargeScaleJitter, collate
from ovseg_training.synthetic import CATEGORIES


def test_reader_gives_consistent_masks_and_labels(synthetic_root):
    dataset = split(synthetic_root, "train")
    assert len(dataset) == 48 and dataset.class_names[0] == "red ball, ball"
    assert dataset.thing_classes == [True, True, True, False, False, False]
    item = dataset[0]
    masks, labels = item["masks"].numpy(), item["labels"].numpy()
    assert masks.shape[1:] == (64, 64) and len(masks) == len(labels)
    assert (masks.sum(0) == 1).all()  # a partition of the image
    image = item["image"].permute(1, 2, 0).numpy().astype(float)
    for mask, label in zip(masks, labels):  # each segment has its category's colour
        assert np.abs(image[mask].mean(0) - CATEGORIES[label]["color"]).max() < 25


def test_images_without_segments_are_left_out(synthetic_root, tmp_path):
    spec = json.loads((synthetic_root / "val.json").read_text())
    spec["annotations"][0]["segments_info"] = []
    path = tmp_path / "val.json"
    path.write_text(json.dumps(spec))
    from ovseg_training.data import PanopticDataset

    assert len(PanopticDataset(path, synthetic_root / "val" / "images", synthetic_root / "val" / "panoptic")) == 11


def test_large_scale_jitter_keeps_masks_on_their_pixels(synthetic_root):
    dataset = split(synthetic_root, "train")
    image, ids, segments = dataset.load(3)
    masks = np.stack([ids == s["id"] for s in segments])
    for seed in range(20):
        out_image, out_masks = LargeScaleJitter(96, 0.1, 2.0, seed=seed)(image, masks)
        assert out_image.shape == (96, 96, 3) and out_masks.shape == (len(masks), 96, 96)
        assert (out_masks.sum(0) <= 1).all()
        uncovered = out_masks.sum(0) == 0
        assert (out_image[uncovered] == 0).all() or uncovered.mean() < 0.05  # padding is black


def test_collate_stacks_images_keeps_targets_per_image(synthetic_root):
    dataset = split(synthetic_root, "train")
    batch = collate([dataset[0], dataset[1]])
    assert batch["images"].shape == (2, 3, 64, 64) and len(batch["masks"]) == 2
