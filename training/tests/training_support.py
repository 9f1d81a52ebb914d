"""Helpers shared by the training tests."""

from __future__ import annotations


def split(root, name):
    from ovseg_training.data import PanopticDataset

    return PanopticDataset(root / f"{name}.json", root / name / "images", root / name / "panoptic")
