from __future__ import annotations

import torch

from ovseg_training.config import LossConfig
from ovseg_training.losses import SetCriterion
from ovseg_training.matcher import hungarian_match
from ovseg_training.points import point_sample, uncertain_points


def test_point_sample_reads_pixel_centres():
    maps = torch.arange(12.0).view(1, 1, 3, 4)
    coords = torch.tensor([[[0.125, 1 / 6], [0.875, 5 / 6]]])  # centres of pixels (0,0) and (2,3)
    torch.testing.assert_close(point_sample(maps, coords)[0, 0], torch.tensor([0.0, 11.0]))


def test_uncertain_points_prefer_the_boundary():
    """On a ramp whose zero is the middle column, the uncertain share sits near it."""
    torch.manual_seed(0)
    logits = (torch.arange(32.0) - 15.5).expand(1, 1, 32, 32).contiguous()
    coords = uncertain_points(logits, 100, 3.0, 0.75)
    assert coords.shape == (1, 100, 2)
    distance = (coords[0, :, 0] * 32 - 16).abs()
    assert distance[:75].max() < 6 and distance[:75].mean() < 0.5 * distance[75:].mean()


def blobs():
    masks = torch.zeros(3, 32, 32, dtype=torch.bool)
    masks[0, :10], masks[1, 10:20], masks[2, 20:] = True, True, True
    return masks


def test_matcher_finds_the_obvious_assignment():
    masks = blobs()
    mask_logits = torch.full((1, 5, 32, 32), -8.0)
    mask_logits[0, 4][masks[0]] = 8.0  # query 4 <-> target 0, query 1 <-> target 2, query 2 <-> target 1
    mask_logits[0, 1][masks[2]] = 8.0
    mask_logits[0, 2][masks[1]] = 8.0
    class_logits = torch.zeros(1, 5, 4)
    rows, cols = hungarian_match(class_logits, mask_logits, [torch.tensor([0, 1, 2])], [masks], num_points=2000)[0]
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 4, 2: 1, 1: 2}


def test_losses_are_low_for_the_right_answer_and_high_otherwise():
    torch.manual_seed(0)
    masks, labels = blobs(), torch.tensor([0, 1, 2])
    criterion = SetCriterion(3, LossConfig(num_points=2000))
    good_masks = torch.full((1, 4, 32, 32), -8.0)
    good_cls = torch.full((1, 4, 4), -5.0)
    for q in range(3):
        good_masks[0, q][masks[q]] = 8.0
        good_cls[0, q, q] = 5.0
    good_cls[0, 3, 3] = 5.0  # the spare query says void
    good, _ = criterion([good_cls], [good_masks], [labels], [masks])
    bad, logged = criterion([torch.zeros(1, 4, 4)], [torch.zeros(1, 4, 32, 32)], [labels], [masks])
    assert good < 0.3 * bad and set(logged) == {"s0_loss_ce", "s0_loss_mask", "s0_loss_dice"}
