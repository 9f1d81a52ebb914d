"""SED's test-time pre- and post-processing, as the official evaluation runs it."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ovseg_ros.modeling.sed.config import SEDConfig


def resized_size(height: int, width: int, short_edge: int = 640, max_size: int = 2560) -> tuple[int, int]:
    """detectron2's ResizeShortestEdge size: the short side to `short_edge`, both scaled
    down again if the long side exceeds `max_size`, each rounded half up."""
    scale = short_edge / min(height, width)
    if height < width:
        new_h, new_w = float(short_edge), scale * width
    else:
        new_h, new_w = scale * height, float(short_edge)
    if max(new_h, new_w) > max_size:
        shrink = max_size / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_image(image: np.ndarray, short_edge: int = 640, max_size: int = 2560) -> np.ndarray:
    """H x W x 3 uint8 RGB -> the published network input: PIL bilinear on uint8 (the
    filter widens when shrinking, as PIL does), result uint8. Small images are upscaled."""
    from PIL import Image

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    new_h, new_w = resized_size(height, width, short_edge, max_size)
    if (new_h, new_w) == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))


def clip_input(resized: np.ndarray, config: SEDConfig | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """Resized uint8 image -> [1, 3, 768, 768]: CLIP mean/std normalisation, then a
    bilinear resize without antialias (align_corners False) that ignores the aspect ratio."""
    config = config if config is not None else SEDConfig()
    x = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))).to(device)
    mean = torch.tensor(config.clip_pixel_mean, dtype=torch.float32, device=device).view(3, 1, 1)
    std = torch.tensor(config.clip_pixel_std, dtype=torch.float32, device=device).view(3, 1, 1)
    x = ((x - mean) / std)[None]
    return F.interpolate(x, size=config.clip_resolution, mode="bilinear", align_corners=False)


def preprocess(image: np.ndarray, config: SEDConfig | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """H x W x 3 uint8 RGB -> the network's [1, 3, 768, 768] input."""
    config = config if config is not None else SEDConfig()
    return clip_input(resize_image(image, config.min_size_test, config.max_size_test), config, device)


def semantic_scores(scores: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Scores [K, h, w] (sigmoid of the last stage) -> [K, H, W] at the original image
    size, bilinear (align_corners False).

    The official `sem_seg_postprocess` first crops the 192 x 192 map to the network
    input's size as if it were at input resolution; after the 640 px resize that cuts
    nothing, so resizing the whole map gives the published numbers, and stays right for
    inputs with a side under 192 px, where the crop would lose part of the map.
    """
    return F.interpolate(scores[None], size=tuple(image_size), mode="bilinear", align_corners=False)[0]


def sed_batch(images, config: SEDConfig, device: torch.device | str = "cpu"):
    """Camera images (H x W x 3 uint8 RGB, any sizes) -> the predictor's Batch of SED
    inputs [B, 3, 768, 768]; every image is mapped back to its own size afterwards."""
    from ovseg_ros.preprocess import Batch, as_rgb

    tensors, sizes = [], []
    for image in images:
        rgb = as_rgb(image)
        tensors.append(preprocess(np.ascontiguousarray(rgb), config, device))
        sizes.append(tuple(rgb.shape[:2]))
    return Batch(torch.cat(tensors), sizes, [tuple(config.clip_resolution)] * len(sizes))
