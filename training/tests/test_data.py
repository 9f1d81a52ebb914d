from __future__ import annotations

import numpy as np
from ovseg_training.data import LargeScaleJitter, collate
from ovseg_training.synthetic import CATEGORIES
from training_support import split


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


def test_large_scale_jitter_keeps_masks_on_their_pixels(synthetic_root):
    dataset = split(synthetic_root, "train")
    image, ids, segments = dataset.load(3)
    for seed in range(20):
        out_image, out_ids = LargeScaleJitter(96, 0.1, 2.0, seed=seed)(image, ids)
        assert out_image.shape == (96, 96, 3) and out_ids.shape == (96, 96)
        for s in segments:  # each segment's pixels keep its category's colour
            mask = out_ids == s["id"]
            if mask.sum() > 30:
                colour = CATEGORIES[dataset.contiguous[s["category_id"]]]["color"]
                assert np.abs(np.median(out_image[mask], axis=0) - colour).max() < 40


def test_collate_stacks_images_keeps_targets_per_image(synthetic_root):
    dataset = split(synthetic_root, "train")
    batch = collate([dataset[0], dataset[1]])
    assert batch["images"].shape == (2, 3, 64, 64) and len(batch["masks"]) == 2
