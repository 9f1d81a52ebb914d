"""Image arrays -> the network's input batch: RGB conversion, resize (shortest edge, as
the published test setting), normalisation and zero padding to a multiple of 32."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


class ImageError(ValueError):
    """An image that cannot be segmented; the message says why, `reason` names the kind
    of problem in a word (warnings are throttled per camera and reason)."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


def as_rgb(image: np.ndarray) -> np.ndarray:
    """H x W (gray), H x W x 1, H x W x 3 (RGB) or H x W x 4 (RGBA) uint8 -> H x W x 3 RGB."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy array, got {type(image).__name__}", "type")
    if image.dtype != np.uint8:
        raise ImageError(f"expected uint8 pixels, got {image.dtype}", "type")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ImageError(f"expected H x W, H x W x 1, x 3 or x 4, got shape {image.shape}", "shape")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"image has no pixels (shape {image.shape})", "empty")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def resized_shape(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """detectron2's ResizeShortestEdge: short side to min_size, long side capped at max_size."""
    if min_size <= 0:
        return height, width
    scale = min_size / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


@dataclass
class Batch:
    """Network input and the sizes needed to map outputs back to each image."""

    images: torch.Tensor  # [B, 3, Hp, Wp], normalised, zero padded
    input_sizes: list[tuple[int, int]]  # original (H, W) per image
    resized_sizes: list[tuple[int, int]]  # (h, w) fed to the network, before padding

    @property
    def padded_size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])


def preprocess(
    images: Sequence[np.ndarray],
    pixel_mean: torch.Tensor,
    pixel_std: torch.Tensor,
    min_size: int = 640,
    max_size: int = 2560,
    size_divisibility: int = 32,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    fixed_size: tuple[int, int] | None = None,
) -> Batch:
    """Resizing runs on `device` with antialiased bilinear filtering (as PIL does for
    the published test-time resize). With `fixed_size` (compiled engines), a resized
    image that does not fit inside it is scaled down further, keeping its aspect ratio,
    and every image is padded to exactly that size."""
    tensors, input_sizes, resized_sizes = [], [], []
    for image in images:
        rgb = as_rgb(image)
        height, width = rgb.shape[:2]
        size = resized_shape(height, width, min_size, max_size)
        if fixed_size is not None:
            size = fitted_shape(*size, *fixed_size)
        if not rgb.flags.writeable:  # e.g. a view of a message buffer; torch wants writable memory
            rgb = rgb.copy()
        x = torch.from_numpy(rgb).to(device).permute(2, 0, 1).unsqueeze(0).float()
        if size != (height, width):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = (x - pixel_mean.to(device).view(1, 3, 1, 1)) / pixel_std.to(device).view(1, 3, 1, 1)
        tensors.append(x[0])
        input_sizes.append((height, width))
        resized_sizes.append(size)
    if fixed_size is None:
        padded_h = _round_up(max(s[0] for s in resized_sizes), size_divisibility)
        padded_w = _round_up(max(s[1] for s in resized_sizes), size_divisibility)
    else:
        padded_h, padded_w = fixed_size
    batch = torch.zeros(len(tensors), 3, padded_h, padded_w, device=device, dtype=dtype)
    for i, x in enumerate(tensors):
        batch[i, :, : x.shape[1], : x.shape[2]] = x
    return Batch(batch, input_sizes, resized_sizes)


def fitted_shape(height: int, width: int, max_height: int, max_width: int) -> tuple[int, int]:
    """The size itself if it fits inside max_height x max_width, else the largest size
    with its aspect ratio that does."""
    if height <= max_height and width <= max_width:
        return height, width
    scale = min(max_height / height, max_width / width)
    return min(max_height, max(1, int(height * scale + 0.5))), min(max_width, max(1, int(width * scale + 0.5)))


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple
