from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg_ros.preprocess import ImageError, as_rgb, preprocess, resized_shape


@pytest.mark.parametrize(
    "shape",
    [(5, 7), (5, 7, 1), (5, 7, 3), (5, 7, 4)],
)
def test_as_rgb_accepts_gray_rgb_rgba(shape):
    image = np.random.default_rng(0).integers(0, 255, size=shape, dtype=np.uint8)
    rgb = as_rgb(image)
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8
    if len(shape) == 2:
        assert (rgb[..., 0] == image).all() and (rgb[..., 2] == image).all()


@pytest.mark.parametrize(
    "image, reason",
    [
        (np.zeros((0, 5, 3), np.uint8), "no pixels"),
        (np.zeros((5, 5, 2), np.uint8), "shape"),
        (np.zeros((5, 5, 3), np.float32), "uint8"),
        (np.zeros((2, 5, 5, 3), np.uint8), "shape"),
        ([[1, 2]], "numpy"),
    ],
)
def test_bad_images_are_refused(image, reason):
    with pytest.raises(ImageError, match=reason):
        as_rgb(image)


def test_resize_rule_of_the_published_test_setting():
    assert resized_shape(480, 640, 640, 2560) == (640, 853)
    assert resized_shape(100, 10000, 640, 2560) == (26, 2560)  # long side capped
    assert resized_shape(480, 640, 0, 2560) == (480, 640)


def test_batch_is_normalised_and_zero_padded():
    mean, std = torch.tensor([100.0, 110.0, 120.0]), torch.tensor([50.0, 60.0, 70.0])
    image = np.full((30, 50, 3), 200, np.uint8)
    batch = preprocess([image, image[:20]], mean, std, min_size=0)
    assert batch.images.shape == (2, 3, 32, 64)
    torch.testing.assert_close(batch.images[0, :, 0, 0], (200 - mean) / std)
    assert batch.images[0, :, 30:].abs().sum() == 0 and batch.images[1, :, 20:].abs().sum() == 0
    assert batch.input_sizes == [(30, 50), (20, 50)]


def test_fixed_size_engines_get_images_that_fit():
    from ovseg_ros.preprocess import fitted_shape

    mean, std = torch.zeros(3), torch.ones(3)
    assert fitted_shape(250, 340, 256, 352) == (250, 340)  # fits: untouched
    assert fitted_shape(640, 853, 480, 640) == (480, 640)  # the 640 short-side rule, shrunk to fit
    batch = preprocess([np.zeros((720, 1280, 3), np.uint8)], mean, std, min_size=640, fixed_size=(480, 640))
    assert batch.images.shape[-2:] == (480, 640) and batch.resized_sizes == [(360, 640)]
