"""Segments in 3D, ROS-free: an aligned depth image and the colour camera's intrinsics
turn a panoptic result into a robust 3D box per segment and a labelled point cloud.

Robust means: each segment's mask is eroded first, which drops its edge, where depth
mixes object and background ("flying pixels") and where a mask bleeds onto the
background. The edge is then grown back ring by ring, but only through pixels whose
depth continues the surface of their neighbours already in the segment: the object's
own surface returns, a jump to the background or a flying pixel does not.
The box spans the remaining points on each axis, less a few extreme points per side
(`trim`) against noise. Every step works on all segments at once: no per-pixel or
per-segment Python loops.

Boxes are axis-aligned in the camera's optical frame (x right, y down, z forward) and
span what the camera sees of a segment: its extent along the viewing direction is that
of its visible faces. Limits: a face seen at a grazing angle is known to about one
pixel's footprint along it (z^2 / (f * |x|) in depth for a side face: 3.5 cm at 4 m,
0.9 m to the side, with f = 525 px), and its outermost pixels are often flying pixels
anyway; where an object stands on the floor, a mask that bleeds onto the floor keeps
about a pixel of it, whose depth continues the object's (about 1 cm there).
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
    fx: float
    fy: float
    cx: float
    cy: float

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


def eroded_labels(labels: np.ndarray, radius: int) -> np.ndarray:
    """uint16 labels kept only where the whole (2r+1)^2 neighbourhood has the same label
    (0 elsewhere). Panoptic ids fit in 16 bits, as in the mono16 label images."""
    ids = labels.astype(np.uint16)
    inward = _Scratch(ids.shape).inward_steps(ids, radius)
    return np.where(inward >= radius, ids, np.uint16(0))


def backproject(us: np.ndarray, vs: np.ndarray, z: np.ndarray, k: Intrinsics) -> np.ndarray:
    """Pixel columns/rows and depths -> [3, N] x, y, z in the camera's optical frame
    (x right, y down, z forward); one row per axis keeps per-axis work contiguous."""
    z = z.astype(np.float32, copy=False)
    return np.stack([(us - np.float32(k.cx)) * z / np.float32(k.fx), (vs - np.float32(k.cy)) * z / np.float32(k.fy), z])


@dataclass
class SegmentGeometry:
    """Per segment id 1..N: box centre and size [N, 3] in metres (camera frame; NaN
    without points), and its number of valid depth points once the edge is filtered [N]
    (all of them; the box itself is measured on a sample of the interior)."""

    center: np.ndarray
    size: np.ndarray
    points: np.ndarray


_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


class _Scratch:
    """Full-image buffers kept between frames: fresh full-image arrays cost page faults
    on every frame."""

    def __init__(self, shape: tuple[int, int]) -> None:
        height, width = shape
        self.shape = shape
        self.finite, self.same, self.band = (np.empty(shape, bool) for _ in range(3))
        self.low, self.high, self.core = (np.empty(shape, np.uint16) for _ in range(3))
        self.inward = np.empty(shape, np.uint8)
        self.inner = np.zeros(shape, bool)  # 2 px or more from the image border: all neighbours used are on it
        self.inner[2:-2, 2:-2] = True

    def inward_steps(self, ids: np.ndarray, radius: int) -> np.ndarray:
        """How many 3x3 erosions, up to `radius`, each pixel survives: whether its
        (2r+1)^2 neighbourhood has one label, for r = 1, 2, ..."""
        kernel = np.ones((3, 3), np.uint8)
        low, high, inward = self.low, self.high, self.inward
        low[...], high[...], inward[...] = ids, ids, 0
        for _ in range(radius):  # radius passes, not pixels or segments
            cv2.erode(low, kernel, dst=low, borderType=cv2.BORDER_REPLICATE)
            cv2.dilate(high, kernel, dst=high, borderType=cv2.BORDER_REPLICATE)
            np.equal(low, high, out=self.same)
            inward += self.same  # windows nest: a pixel that fails once fails from then on
        return inward


class SegmentMeasurer:
    """Robust 3D boxes of panoptic segments (see the module docstring). One per camera:
    it keeps its buffers between frames, so one instance is not for two threads at once.

    erosion: pixels dropped from each mask's edge before it is grown back (2: the masks
    come from a quarter-resolution grid, so their edges are uncertain by about 2 px). continuity: a
    pixel rejoins its segment when its depth is within this fraction (plus 1 cm) of the
    depth its segment's surface, continued from its neighbours, predicts. trim: share of
    points (at least `min_trim`) left out at each end of each axis. The interior is
    sampled every `stride`-th pixel (the edge, which sets the box, is kept whole)."""

    def __init__(self, erosion: int = 2, continuity: float = 0.002, trim: float = 0.001, min_trim: int = 3,
                 stride: int = 4) -> None:
        if erosion < 0 or stride < 1 or continuity < 0:
            raise ValueError("erosion >= 0, stride >= 1 and continuity >= 0 are required")
        self.erosion, self.continuity, self.trim, self.min_trim = erosion, continuity, trim, min_trim
        self.stride = stride
        self._scratch: _Scratch | None = None
        self._sampled: tuple | None = None
        self._ray_cache: tuple | None = None

    def __call__(self, panoptic: np.ndarray, depth: np.ndarray, intrinsics: Intrinsics, num_segments: int) -> SegmentGeometry:
        """Segments 1..num_segments of `panoptic`; depth in metres, aligned, NaN (or any
        non-finite value) where invalid."""
        n = min(num_segments, 65535)
        center = np.full((num_segments, 3), np.nan, np.float32)
        size = np.full((num_segments, 3), np.nan, np.float32)
        points = np.zeros(num_segments, np.int64)
        if self._scratch is None or self._scratch.shape != depth.shape:
            self._scratch = _Scratch(depth.shape)
        scratch = self._scratch
        finite = np.isfinite(depth, out=scratch.finite)
        ids = panoptic.astype(np.uint16)
        inward = scratch.inward_steps(ids, self.erosion)
        core = scratch.core
        np.equal(inward, self.erosion, out=scratch.same)
        scratch.same &= finite
        np.multiply(ids, scratch.same, out=core)
        points[:n] = cv2.calcHist([core], [0], None, [n + 1], [0, n + 1]).ravel()[1:].astype(np.int64)
        stride = self.stride
        sampled = core[::stride, ::stride].copy()  # before the edge grows back into core
        edge_at, edge_labels = self._grow_back(ids, inward, depth, finite)
        points[:n] += np.bincount(edge_labels, minlength=n + 1)[1 : n + 1]
        core_at = np.flatnonzero(sampled)
        at = np.concatenate([self._sampled_pixels(depth.shape)[core_at], edge_at])
        segs = np.concatenate([sampled.ravel()[core_at], edge_labels]).astype(np.int64) - 1
        inside = segs < n  # ids beyond num_segments are not asked for
        if not inside.all():
            at, segs = at[inside], segs[inside]
        if n == 0 or at.size == 0:
            return SegmentGeometry(center, size, points)
        ray_x, ray_y = self._rays(intrinsics, depth.shape)
        z = depth.ravel().take(at)
        xyz = np.stack([ray_x.take(at) * z, ray_y.take(at) * z, z])
        counts = np.bincount(segs, minlength=n)
        cut = np.minimum(np.maximum(self.min_trim, np.floor(self.trim * counts)), np.maximum(counts - 1, 0) / 2)
        low, high = _quantiles(segs, xyz, counts, cut)
        has = np.flatnonzero(counts > 0)
        center[has] = ((low + high) / 2)[has]
        size[has] = (high - low)[has]
        return SegmentGeometry(center, size, points)

    def _sampled_pixels(self, shape: tuple[int, int]) -> np.ndarray:
        """Flat image index of each pixel of the `stride` sampling grid, in grid order."""
        if self._sampled is None or self._sampled[0] != shape:
            grid = np.arange(shape[0] * shape[1]).reshape(shape)[:: self.stride, :: self.stride]
            self._sampled = (shape, grid.ravel())
        return self._sampled[1]

    def _rays(self, k: Intrinsics, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Per pixel (flat), x / z and y / z of its ray: back-projection is then a gather
        and a product per axis."""
        if self._ray_cache is None or self._ray_cache[0] != (k, shape):
            vs, us = np.indices(shape, np.float32)
            rays = backproject(us.ravel(), vs.ravel(), np.ones(us.size, np.float32), k)
            self._ray_cache = ((k, shape), rays[0], rays[1])
        return self._ray_cache[1], self._ray_cache[2]

    def _grow_back(self, ids, inward, depth, finite):
        """The eroded edge pixels that rejoin their segment, ring by ring from the core
        outwards, all 8 neighbour directions at once: (flat pixel indices, labels); they
        are written into the core. A pixel rejoins when, in some direction, its segment's
        surface continued from the two pixels there already in the segment (linear
        extrapolation; one pixel where only the nearer one is) predicts its depth.
        Non-finite depth never fits: comparisons with NaN are False. Pixels within 2 px
        of the image border stay out (an object the border cuts has no known edge there)."""
        rings, scratch = self.erosion, self._scratch
        width = depth.shape[1]
        band = np.less(inward, rings, out=scratch.band)
        band &= finite
        band &= scratch.inner
        np.not_equal(ids, 0, out=scratch.same)
        band &= scratch.same
        at = np.flatnonzero(band)
        if rings == 0 or at.size == 0:
            return at, ids.ravel()[at]
        inward_at = inward.ravel()[at]
        grown, flat_depth, flat_ids = scratch.core.ravel(), depth.ravel(), ids.ravel()
        offsets = np.array([dv * width + du for dv, du in _NEIGHBOURS])[:, None]  # [8, 1] in the flat image
        continuity, slack = np.float32(self.continuity), np.float32(0.01)
        joined_at, joined_labels = [], []
        with np.errstate(invalid="ignore"):
            for inside_by in range(rings - 1, -1, -1):  # rings, next to the core first; not pixels or segments
                here = at[inward_at == inside_by]
                label = flat_ids[here]
                one = here + offsets  # [8 directions, pixels of the ring]
                two = one + offsets
                z1, z = flat_depth.take(one), flat_depth.take(here)
                extrapolated = np.where(grown.take(two) == label, 2 * z1 - flat_depth.take(two), z1)
                fits = np.abs(extrapolated - z, out=extrapolated) <= continuity * z + slack
                fits &= grown.take(one) == label
                near = fits.any(axis=0)
                here, label = here[near], label[near]
                grown[here] = label
                joined_at.append(here)
                joined_labels.append(label)
        return np.concatenate(joined_at), np.concatenate(joined_labels)


def segment_geometry(panoptic: np.ndarray, depth: np.ndarray, intrinsics: Intrinsics, num_segments: int, **options) -> SegmentGeometry:
    """One-off SegmentMeasurer(**options)(...): for scripts and tests; a node keeps a measurer."""
    return SegmentMeasurer(**options)(panoptic, depth, intrinsics, num_segments)


def _quantiles(segs: np.ndarray, xyz: np.ndarray, counts: np.ndarray, cut: np.ndarray, resolution: float = 1e-4):
    """Per segment and axis ([n, 3] each), the values with `cut[segment]` of the segment's
    values below (low) and above (high); linear between neighbours for a fractional cut.

    From one sort per axis of all points at once, to `resolution` metres (coarser only
    where n segments times the axis' span exceed 2^30 steps): each value becomes an
    integer step count shifted by its segment index times more than the axis' whole
    span, so the sort keeps segments apart and in order, and every segment's ranks sit
    at known positions."""
    n = len(counts)
    start = np.cumsum(counts) - counts  # where each segment's values begin once sorted
    positions = np.stack([start + cut, start + counts - 1 - cut])  # [2, n]
    last = max(int(start[-1] + counts[-1]) - 1, 0)
    below = np.clip(np.floor(positions).astype(np.int64), 0, last)
    above = np.clip(np.ceil(positions).astype(np.int64), 0, last)
    fraction = positions - np.floor(positions)
    segment = segs.astype(np.int32)
    out = np.empty((2, n, 3), np.float64)
    for axis in range(3):  # three axes, not segments or pixels
        values = xyz[axis]
        origin = float(values.min())
        span = float(values.max()) - origin
        step = max(resolution, span * n / 2**30)
        spacing = int(span / step) + 2  # steps per segment: n * spacing < 2^31
        keys = segment * np.int32(spacing)
        keys += ((values - np.float32(origin)) * np.float32(1 / step)).astype(np.int32)
        keys.sort()
        shift = np.arange(n) * spacing
        low, high = keys[below] - shift, keys[above] - shift
        out[:, :, axis] = (low + fraction * (high - low) + 0.5) * step + origin
    return out[0], out[1]


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
