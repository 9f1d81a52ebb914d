"""Depth, ROS-free: an aligned depth image decoded to metres, the colour camera's
intrinsics, the depth sensor's noise model, and the labelled point cloud. The 3D box of
each segment is in segments_3d.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ovseg_ros.decode import image_fields, pixel_rows
from ovseg_ros.preprocess import ImageError

DEPTH_ENCODINGS = ("16UC1", "32FC1")  # millimetres, metres


class DepthError(ImageError):
    """Depth or camera_info that cannot be used with a frame; the 2D outputs go on."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the colour image in pixels (the depth is aligned to it)."""

    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(isinstance(v, (int, float, np.floating, np.integer)) and np.isfinite(v) for v in values):
            raise DepthError(f"intrinsics must be finite numbers, got fx {self.fx}, fy {self.fy}, cx {self.cx}, cy {self.cy}",
                             "camera_info")
        if self.fx <= 0 or self.fy <= 0:
            raise DepthError(f"intrinsics need positive focal lengths, got fx {self.fx}, fy {self.fy}", "camera_info")

    @classmethod
    def from_camera_info(cls, info, image_size: tuple[int, int] | None = None) -> "Intrinsics":
        """From sensor_msgs/CameraInfo's K; refused when unusable or for another image size."""
        try:
            k = [float(v) for v in info.k]
            height, width = int(info.height), int(info.width)
        except (AttributeError, TypeError, ValueError) as exc:
            raise DepthError(f"not a camera_info message: {exc}", "camera_info") from exc
        if len(k) != 9 or not all(np.isfinite(k)):
            raise DepthError("camera_info K is not 9 finite numbers", "camera_info")
        if k[0] <= 0 or k[4] <= 0:
            raise DepthError(f"camera_info has a zero or negative focal length (fx {k[0]}, fy {k[4]})", "camera_info")
        if image_size is not None and height and width and (height, width) != tuple(image_size):
            raise DepthError(
                f"camera_info is for {width}x{height} images, the image is {image_size[1]}x{image_size[0]}", "camera_info"
            )
        return cls(k[0], k[4], k[2], k[5])


@dataclass(frozen=True)
class DepthNoise:
    """How a depth camera errs at depth z (metres): Gaussian noise of standard deviation
    sigma(z) = sigma_at_1m * z**exponent, then rounding to `quantum`.

    Stereo cameras have exponent 2: depth = f * B / disparity, so a disparity error of
    `subpixel` pixels is a depth error of z^2 * subpixel / (f * B) (Intel's RealSense D400
    white paper on subpixel linearity; 0.08 px is the
    subpixel figure used for the presets). Time-of-flight cameras are
    closer to exponent 1. The defaults (1.5 mm at 1 m, z^2, 1 mm) are a RealSense D415 at
    1280x720; DEPTH_NOISE_PRESETS has others. The 3D step scales its tolerances with it."""

    sigma_at_1m: float = 0.0015
    exponent: float = 2.0
    quantum: float = 0.001

    def __post_init__(self) -> None:
        if not (np.isfinite(self.sigma_at_1m) and self.sigma_at_1m >= 0 and 0 <= self.exponent <= 4
                and np.isfinite(self.quantum) and self.quantum >= 0):
            raise ValueError(f"depth noise needs sigma_at_1m >= 0, 0 <= exponent <= 4 and quantum >= 0, got {self}")

    def sigma(self, z):
        """Standard deviation of the depth noise at depth z (metres), elementwise."""
        s = self.sigma_at_1m if isinstance(z, float) else np.float32(self.sigma_at_1m)
        if self.exponent == 2:
            return s * z * z
        if self.exponent == 1:
            return s * z
        return s * np.power(z, np.float32(self.exponent))

    @classmethod
    def parse(cls, text: str) -> "DepthNoise":
        """A preset name (DEPTH_NOISE_PRESETS) or 'SIGMA_AT_1M[,EXPONENT[,QUANTUM]]' in metres."""
        text = text.strip()
        if text in DEPTH_NOISE_PRESETS:
            return DEPTH_NOISE_PRESETS[text]
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            values = []
        if not 1 <= len(values) <= 3:
            raise ValueError(f"depth noise {text!r} is neither a preset ({', '.join(DEPTH_NOISE_PRESETS)}) "
                             "nor SIGMA_AT_1M[,EXPONENT[,QUANTUM]] in metres")
        return cls(*values)


# sigma_at_1m = subpixel 0.08 / (focal length of the depth imager in px * baseline in m)
DEPTH_NOISE_PRESETS = {
    "realsense_d415": DepthNoise(0.0015, 2.0, 0.001),  # 1280x720, 65 deg HFOV (f 1005 px), 55 mm baseline
    "realsense_d435": DepthNoise(0.0036, 2.0, 0.001),  # 848x480, 87 deg HFOV (f 447 px), 50 mm baseline
    "realsense_d455": DepthNoise(0.0019, 2.0, 0.001),  # 848x480, 87 deg HFOV (f 447 px), 95 mm baseline
}


def decode_depth(msg, image_size: tuple[int, int]) -> np.ndarray:
    """sensor_msgs/Image depth aligned to the colour image -> H x W float32 metres, NaN
    where invalid (0, non-finite, negative). 16UC1 is millimetres, 32FC1 metres."""
    height, width, step, encoding, big_endian = image_fields(msg, DepthError, "depth_type")
    if encoding not in DEPTH_ENCODINGS:
        raise DepthError(f"unsupported depth encoding {encoding!r}; supported: 16UC1 (mm), 32FC1 (m)", "depth_encoding")
    if (height, width) != tuple(image_size):
        raise DepthError(
            f"depth is {width}x{height}, the colour image {image_size[1]}x{image_size[0]}: depth must be aligned to it",
            "depth_size",
        )
    item = 2 if encoding == "16UC1" else 4
    dtype = np.dtype("<u2" if item == 2 else "<f4").newbyteorder(">" if big_endian else "<")
    rows = pixel_rows(msg.data, height, width * item, step, DepthError, "depth image", "depth_truncated")
    values = np.ascontiguousarray(rows).view(dtype).reshape(height, width)
    if item == 2:
        depth = values.astype(np.float32) * np.float32(0.001)
        depth[values == 0] = np.nan
    else:
        depth = values.astype(np.float32)
        depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
    if not np.isfinite(depth).any():
        raise DepthError("depth image has no valid pixel", "depth_invalid")
    return depth


def backproject(us: np.ndarray, vs: np.ndarray, z: np.ndarray, k: Intrinsics) -> np.ndarray:
    """Pixel columns/rows and depths -> [3, N] x, y, z in the camera's optical frame
    (x right, y down, z forward); one row per axis keeps per-axis work contiguous."""
    z = z.astype(np.float32, copy=False)
    return np.stack([(us - np.float32(k.cx)) * z / np.float32(k.fx), (vs - np.float32(k.cy)) * z / np.float32(k.fy), z])


def point_cloud(
    panoptic: np.ndarray, semantic: np.ndarray, rgb: np.ndarray, depth: np.ndarray, intrinsics: Intrinsics, decimation: int = 1
) -> np.ndarray:
    """The labelled cloud as a structured array with PointCloud2's layout (see POINT_FIELDS,
    little-endian): every `decimation`-th pixel in each direction with valid depth.
    rgb is H x W x 3 in RGB order; class_index 65535 where no class."""
    step = max(1, decimation)
    height, width = depth.shape
    d = depth[::step, ::step]
    keep = np.flatnonzero(np.isfinite(d))
    rows, cols = np.divmod(keep, d.shape[1])
    vs, us = rows * step, cols * step
    flat = vs * width + us
    z = depth.ravel()[flat]
    words = np.empty((flat.size, 6), "<u4")  # one 24-byte record per point, written a column at a time
    words[:, :3].view("<f4")[...] = backproject(us.astype(np.float32), vs.astype(np.float32), z, intrinsics).T
    colour = np.ascontiguousarray(rgb).reshape(-1, 3)[flat].astype(np.uint32)
    words[:, 3] = (colour[:, 0] << 16) | (colour[:, 1] << 8) | colour[:, 2]  # PCL's packed rgb
    labels = semantic.ravel()[flat]
    words[:, 4] = np.where(labels < 0, 65535, labels)  # the uint16 field and its 2 bytes of padding
    words[:, 5] = panoptic.ravel()[flat]
    return words.view(POINT_DTYPE).reshape(-1)


# name, offset, PointField datatype (7 FLOAT32, 4 UINT16, 6 UINT32), numpy type
POINT_FIELDS = (("x", 0, 7, "<f4"), ("y", 4, 7, "<f4"), ("z", 8, 7, "<f4"), ("rgb", 12, 7, "<f4"),
                ("class_index", 16, 4, "<u2"), ("segment_id", 20, 6, "<u4"))
POINT_DTYPE = np.dtype({
    "names": [f[0] for f in POINT_FIELDS], "formats": [f[3] for f in POINT_FIELDS],
    "offsets": [f[1] for f in POINT_FIELDS], "itemsize": 24,
})
