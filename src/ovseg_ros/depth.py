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

from ovseg_ros.decode import byte_view, image_fields
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
    data = byte_view(msg.data)
    if step < width * item or data.size < step * (height - 1) + width * item:
        raise DepthError(f"truncated depth image: {data.size} bytes for {height} rows of step {step}", "depth_truncated")
    rows = np.lib.stride_tricks.as_strided(data, shape=(height, width * item), strides=(step, 1))
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
    sampled every `stride`-th pixel (the edge, which sets the box, is kept whole);
    quantiles come from per-segment histograms of `bin_size` metres, interpolated inside
    a bin."""

    def __init__(self, erosion: int = 2, continuity: float = 0.002, trim: float = 0.001, min_trim: int = 3,
                 stride: int = 4, bin_size: float = 0.002) -> None:
        if erosion < 0 or stride < 1 or bin_size <= 0 or continuity < 0:
            raise ValueError("erosion >= 0, stride >= 1, bin_size > 0 and continuity >= 0 are required")
        self.erosion, self.continuity, self.trim, self.min_trim = erosion, continuity, trim, min_trim
        self.stride, self.bin_size = stride, bin_size
        self._scratch: _Scratch | None = None

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
        core_v, core_u = np.divmod(core_at, sampled.shape[1])
        edge_v, edge_u = np.divmod(edge_at, depth.shape[1])
        vs = np.concatenate([core_v * stride, edge_v])
        us = np.concatenate([core_u * stride, edge_u])
        segs = np.concatenate([sampled.ravel()[core_at], edge_labels]).astype(np.int64) - 1
        inside = segs < n  # ids beyond num_segments are not asked for
        if not inside.all():
            vs, us, segs = vs[inside], us[inside], segs[inside]
        if n == 0 or vs.size == 0:
            return SegmentGeometry(center, size, points)
        xyz = backproject(us.astype(np.float32), vs.astype(np.float32), depth[vs, us], intrinsics)
        counts = np.bincount(segs, minlength=n)
        cut = np.minimum(np.maximum(self.min_trim, np.floor(self.trim * counts)), np.maximum(counts - 1, 0) / 2)
        low, high = _quantiles(segs, xyz, counts, cut, counts - cut, self.bin_size)
        has = np.flatnonzero(counts > 0)
        center[has] = ((low + high) / 2)[has]
        size[has] = (high - low)[has]
        return SegmentGeometry(center, size, points)

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
        ring = rings - inward.ravel()[at]  # 1: next to the core ... rings: the mask's edge
        order = np.argsort(ring, kind="stable")
        at, ring = at[order], ring[order]
        bounds = np.searchsorted(ring, np.arange(1, rings + 2))
        grown, flat_depth = scratch.core.ravel(), depth.ravel()
        own = ids.ravel()[at]
        z = flat_depth[at].astype(np.float32)
        tolerance = np.float32(self.continuity) * z + np.float32(0.01)
        joined = np.zeros(at.size, bool)
        with np.errstate(invalid="ignore"):
            for start, stop in zip(bounds[:-1], bounds[1:]):  # rings, not pixels or segments
                here, label, depth_here, tol = at[start:stop], own[start:stop], z[start:stop], tolerance[start:stop]
                near = np.zeros(stop - start, bool)
                for dv, du in _NEIGHBOURS:  # 8 directions
                    one = here + (dv * width + du)
                    two = one + (dv * width + du)
                    z1, z2 = flat_depth[one], flat_depth[two]
                    predicted = np.where(grown[two] == label, 2 * z1 - z2, z1)  # no depth there: not in grown
                    near |= (grown[one] == label) & (np.abs(predicted - depth_here) <= tol)
                joined[start:stop] = near
                grown[here[near]] = label[near]
        return at[joined], own[joined]


def segment_geometry(panoptic: np.ndarray, depth: np.ndarray, intrinsics: Intrinsics, num_segments: int, **options) -> SegmentGeometry:
    """One-off SegmentMeasurer(**options)(...): for scripts and tests; a node keeps a measurer."""
    return SegmentMeasurer(**options)(panoptic, depth, intrinsics, num_segments)


def _quantiles(segs: np.ndarray, xyz: np.ndarray, counts: np.ndarray, low_rank: np.ndarray, high_rank: np.ndarray,
               bin_size: float, max_bins: int = 4096):
    """Per segment and axis ([n, 3] each), the values with `low_rank[segment]` and
    `high_rank[segment]` of the segment's values under them (counts: its points);
    linear inside a bin.

    One histogram per segment over its own range (bins of `bin_size`, coarser only for
    a segment spanning more than `max_bins` of them), all laid end to end in one array:
    a cumulative sum over it and a binary search find every segment's ranks at once."""
    n, present = len(counts), counts > 0
    points_before = np.cumsum(counts) - counts  # in the segments laid out before each one
    out = np.empty((2, n, 3), np.float64)
    for axis in range(3):  # three axes, not segments or pixels
        values = xyz[axis]
        lo = np.full(n, np.inf, np.float32)
        hi = np.full(n, -np.inf, np.float32)
        np.minimum.at(lo, segs, values)
        np.maximum.at(hi, segs, values)
        lo, hi = np.where(present, lo, 0), np.where(present, hi, 0)
        span = (hi - lo).astype(np.float64)
        step = np.maximum(bin_size, span / (max_bins - 1))
        bins_of = (span / step).astype(np.int64) + 1
        first_bin = np.cumsum(bins_of) - bins_of
        within = np.minimum(((values - lo[segs]) / step[segs]).astype(np.int64), bins_of[segs] - 1)
        hist = np.bincount(first_bin[segs] + within, minlength=int(bins_of.sum()))
        cumulative = np.cumsum(hist)
        for side, rank in enumerate((low_rank, high_rank)):
            target = points_before + rank
            index = np.clip(np.searchsorted(cumulative, target, side="left"), first_bin, first_bin + bins_of - 1)
            before = np.where(index > 0, cumulative[np.maximum(index - 1, 0)], 0)
            fraction = np.clip((target - before) / np.maximum(hist[index], 1), 0.0, 1.0)
            out[side, :, axis] = np.clip(lo + (index - first_bin + fraction) * step, lo, hi)  # never past the extremes
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
