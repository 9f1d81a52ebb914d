"""Segments in 3D, ROS-free: a panoptic result, the aligned depth in metres and the
intrinsics -> a 3D box per segment, measured on the segment's own surface.

A mask's edge is uncertain by a few pixels (`mask_margin`: the masks come from a
quarter-resolution grid), so the mask alone cannot say which of its pixels are the
object: near its edge it may cover the wall behind, the object behind, the floor, or
flying pixels (depths between the object and what is behind it). Depth can. The step,
with tolerances that follow the camera's noise at each depth (DepthNoise):

1. Edges: on the 3x3 median of the depth, a pixel deeper than a 4-neighbour by more
   than one surface steps between pixels (a 45 degree slope, 3 sigma of the median's
   noise, quantisation) is cut, unless the step repeats the one beyond (a plane seen
   at any angle steps evenly; a depth edge does not). Pixels far from their own
   median (flying pixels, outliers) and pixels without depth are cut too.
2. Surfaces: 4-connected components of what is left within each mask less its
   outermost ring (so none spans two segments).
3. The segment's surface: the component with most of the mask's interior (pixels
   weighted by the square of their distance from the mask's edge), plus components
   beyond the margin or on a thin part's ridge within its depth range (an object that
   a pole in front splits in two; a pole on a crate that noise cuts off).
4. The margin: pixels the surface reaches ring by ring outwards from its interior or
   a thin part's ridge (never along a ring: a strip of floor that a wide mask takes in
   along an object's side is connected to it only at the object's foot); pixels cut
   from no surface that continue their reached neighbours further in; pixels amid
   holes within the surface's depth range. Of these, those whose depth is nearer the
   surface just outside the mask than the segment's interior nearby, where the two
   differ, are dropped: a wide mask's strip of wall, floor or object behind.
5. The box spans the kept points on each axis less the most extreme one per side
   (`min_trim`); along the optical axis on depth averaged over each point's reached
   3x3 neighbours, which takes most of the noise's spread out of the extent.

Every step works on all segments at once: compiled loops over the image or over the
margin's pixels (segments_3d_kernels, numba), OpenCV's connected components, numpy on
the few-thousand-element arrays between them; no per-pixel or per-segment Python loops.
The loops build on first use (seconds) or load from numba's cache: compile_3d_step
builds them ahead of a node's first frame.
Boxes are axis-aligned in the camera's optical frame (x right, y down, z forward) and
span what the camera sees where it has depth.

Known limits (tests/test_segments_3d.py, the README's tables): an object closer to the
surface behind it than the noise lets depth tell (a few cm at 1 m, 15-25 cm at 5-6 m
with the default noise) takes in what a wide mask covers of that surface; where an
object stands on the floor a wide mask keeps the floor pixels within the noise of its
foot; what falls in a hole of the depth image is not measured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from ovseg_ros.depth import DepthError, DepthNoise, Intrinsics, backproject
from ovseg_ros.segments_3d_kernels import (
    RowBands,
    box_points,
    box_samples,
    clipped_ids,
    component_stats,
    doubtful_pixels,
    drop_pixels,
    extreme_ends,
    extreme_keys,
    extreme_ranks,
    interior_nearby,
    kept_candidates,
    margin_candidates,
    mask_rings,
    median_and_cuts,
    nearer_outside,
    outside_nearby,
    quantile_ranks,
    reach_outwards,
    reached_sums,
    segment_surfaces,
    serial,
)

RAW_STEP_SIGMAS = 3 * np.sqrt(2)  # 3 sigma of the difference of two neighbouring raw pixels
MEDIAN_STEP_SIGMAS = RAW_STEP_SIGMAS * 0.45  # 3 sigma of the difference of two neighbouring 3x3 medians
OUTLIER_SIGMAS = 3.5  # a raw pixel against its 3x3 median
STATS_STRIDE = 3  # components are scored on every third pixel each way
KINK_SIGMAS = 3 * np.sqrt(6) * 0.45  # 3 sigma of a second difference of 3x3 medians
EXTREMES_UP_TO = 8  # box ends at most this many points in: found in one pass (_quantiles' "extremes")


@dataclass
class SegmentGeometry:
    """Per segment id 1..N: box centre and size [N, 3] in metres (camera frame; NaN
    without points), and its number of depth points on its surface [N] (the margin's
    counted, the interior's estimated from the sample the box is measured on)."""

    center: np.ndarray
    size: np.ndarray
    points: np.ndarray


class _Scratch:
    """Full-image buffers kept between frames: fresh full-image arrays cost page faults
    on every frame."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape
        height, width = shape
        self.open, self.reached, self.ridge, self.cut = (np.empty(shape, bool) for _ in range(4))
        self.inward, self.sparse = np.empty(shape, np.uint8), np.empty(shape, np.uint8)
        self.comp = np.empty(shape, np.int32)
        self.ids = np.empty(shape, np.uint16)  # an int32 panoptic image's ids (clipped_ids)
        # padded by 2 px (NaN) so that every pixel has two neighbours each way
        padded = (height + 4, width + 4)
        self.smooth_padded, self.step_padded, self.kink_padded = (np.full(padded, np.nan, np.float32) for _ in range(3))
        self.smooth = self.smooth_padded[2:-2, 2:-2]
        self.finite_padded = np.empty((height + 2, width + 2), np.float32)  # valid depth, 0 elsewhere, edges replicated
        self.rim = -1  # mask_rings' buffers, padded by the rings' radius: made by inward_steps
        self.ids_padded = self.runs = self.inward_padded = None
        self.reached_padded, self.seeds_padded = (np.empty((height + 2, width + 2), np.uint8) for _ in range(2))
        self.depth_padded = np.empty((height + 2, width + 2), np.float32)
        self.reached_sum, self.reached_count = np.empty(shape, np.float32), np.empty(shape, np.uint16)
        self.ring_total, self.ring_count = np.empty(shape, np.float32), np.empty(shape, np.uint8)  # outside_nearby's
        words = -(-height * width // 8)  # margin_candidates reads its flags 8 bytes at a time
        self.margin_flags = np.empty(8 * words, np.uint8)
        self.margin_at, self.margin_kind = np.empty(8 * words, np.int64), np.empty(8 * words, np.uint8)

    def inward_steps(self, ids: np.ndarray, radius: int, rows=serial) -> np.ndarray:
        """How many 3x3 erosions, up to `radius`, each pixel survives: whether its
        (2r+1)^2 neighbourhood has one label, for r = 1, 2, ... The image border is an
        edge too: a wide mask reaches it over the wall beside an object as well as over
        the object (what the border cuts of an object is reached from its interior).
        Also self.ridge: where that count peaks (its 3x3 maximum, above 0). One compiled
        pass (segments_3d_kernels.mask_rings)."""
        if self.rim != radius:
            height, width = self.shape
            self.rim = radius
            self.ids_padded = np.empty((height + 2 * radius, width + 2 * radius), np.uint16)
            self.runs = np.empty((height + 2 * radius, width), np.uint8)
            self.inward_padded = np.empty((height + 2, width + 2), np.uint8)
        mask_rings(ids, radius, self.ids_padded, self.runs, self.inward_padded, self.inward, self.ridge, rows)
        return self.inward


class SegmentMeasurer:
    """Robust 3D boxes of panoptic segments (see the module docstring). One per camera:
    it keeps its buffers between frames, so one instance is not for two threads at once.

    noise: the depth camera's noise model (DepthNoise; RealSense D415-like by default).
    mask_margin: pixels of each mask's edge that may be wrong (3: quarter-resolution
    masks). max_slope_deg: the steepest surface, against the viewing ray, still taken
    as one surface between neighbouring pixels. trim: share of points (at least
    `min_trim`) left out at each end of each axis. The interior is sampled every
    `stride`-th pixel (the margin, which sets the box, is kept whole). threads: how many
    bands of rows its loops run on at once (the calling thread and threads - 1 workers of
    its own; 1: the calling thread only); the boxes are the same for any number."""

    def __init__(self, noise: DepthNoise = DepthNoise(), mask_margin: int = 3, max_slope_deg: float = 45.0,
                 trim: float = 0.0, min_trim: int = 1, stride: int = 4, threads: int = 2) -> None:
        if not isinstance(noise, DepthNoise):
            raise TypeError(f"noise must be a DepthNoise, got {type(noise).__name__}")
        if (mask_margin < 0 or stride < 1 or not 0 < max_slope_deg < 90 or not 0 <= trim < 0.5 or min_trim < 0
                or threads < 1):
            raise ValueError("mask_margin >= 0, stride >= 1, 0 < max_slope_deg < 90, 0 <= trim < 0.5, min_trim >= 0 and "
                             "threads >= 1 are required")
        self.noise, self.mask_margin, self.trim, self.min_trim, self.stride = noise, mask_margin, trim, min_trim, stride
        self.slope = float(np.tan(np.radians(max_slope_deg)))
        self._scratch: _Scratch | None = None
        self._ray_cache: tuple | None = None
        self._select = SelectionTimer()
        self._rows = RowBands(threads)

    def step_tolerance(self, z: np.ndarray, focal: float, sigmas: float = RAW_STEP_SIGMAS) -> np.ndarray:
        """Largest depth step between neighbouring pixels of one surface at depth z
        (float32, elementwise): a slope of max_slope_deg over one pixel, `sigmas` times
        the noise, quantisation. Two raw pixels differ by sqrt(2) sigma; two 3x3
        medians by about 0.45 of that."""
        noise = self.noise
        return z * np.float32(self.slope / focal) + np.float32(sigmas) * noise.sigma(z) + np.float32(2 * noise.quantum)

    def tolerance_terms(self, focal: float) -> tuple[float, float, float, float]:
        """step_tolerance's terms but its sigmas, for the compiled loops that compute it
        per pixel (segments_3d_kernels._tolerance): slope per pixel, sigma at 1 m, the
        noise's exponent, twice the quantum."""
        noise = self.noise
        return self.slope / focal, noise.sigma_at_1m, float(noise.exponent), 2 * noise.quantum

    def __call__(self, panoptic: np.ndarray, depth: np.ndarray, intrinsics: Intrinsics, num_segments: int) -> SegmentGeometry:
        """Segments 1..num_segments of `panoptic` (H x W ids); depth H x W in metres,
        aligned to it, NaN (or any non-finite value, or <= 0) where invalid."""
        panoptic, depth = np.asarray(panoptic), np.asarray(depth)
        if panoptic.ndim != 2 or depth.shape != panoptic.shape:
            raise DepthError(f"depth of shape {depth.shape} does not match the panoptic image's {panoptic.shape}: "
                             "it must be aligned to the colour image, one value per pixel", "depth_size")
        if not isinstance(intrinsics, Intrinsics):
            raise TypeError(f"intrinsics must be an Intrinsics, got {type(intrinsics).__name__}")
        raw = np.ascontiguousarray(depth, dtype=np.float32)  # the compiled loops are built for contiguous arrays
        n = max(0, min(int(num_segments), 65535))
        center = np.full((num_segments, 3), np.nan, np.float32)
        size = np.full((num_segments, 3), np.nan, np.float32)
        points = np.zeros(num_segments, np.int64)
        if n == 0:
            return SegmentGeometry(center, size, points)
        if self._scratch is None or self._scratch.shape != raw.shape:
            self._scratch = _Scratch(raw.shape)
        scratch = self._scratch
        focal = float(min(intrinsics.fx, intrinsics.fy))
        if panoptic.dtype == np.uint16:
            ids = np.ascontiguousarray(panoptic)
        elif panoptic.dtype == np.int32:  # the node's
            clipped_ids(np.ascontiguousarray(panoptic), scratch.ids, self._rows)
            ids = scratch.ids
        else:
            ids = np.clip(panoptic, 0, 65535).astype(np.uint16)
        deep = self.mask_margin + 1
        inward = scratch.inward_steps(ids, deep, self._rows)  # and scratch.ridge: where the distance from the mask's edge peaks
        self._smooth_and_cut(raw, focal)  # scratch.smooth_padded, scratch.cut (also every pixel without depth), scratch.open
        comp, count = self._components()
        stats = self._component_stats(comp, count, ids, inward, raw, deep)
        accepted, low, high = self._segment_surfaces(stats, n, focal)
        reached = self._reach(comp, accepted, inward, deep)
        # shared by the margin's and the box's steps: raw depth summed over each pixel's
        # reached 3x3 neighbours, and their number
        reached_sums(raw, scratch.reached_padded, scratch.depth_padded, scratch.reached_sum, scratch.reached_count, self._rows)
        edge_at = self._kept_margin(ids, inward, raw, reached, low, high, n, deep, focal)
        # the box's points: the interior's every stride-th pixel each way, and the margin's
        # kept pixels; per segment their number, and the points on its surface (the
        # interior's estimated from its sample, the margin's counted)
        stride = self.stride
        at = np.empty(-(-raw.shape[0] // stride) * -(-raw.shape[1] // stride) + edge_at.size, np.int64)
        segs, counts = np.empty(at.size, np.int32), np.zeros(n, np.int64)
        at = at[:box_samples(reached, inward, ids, deep, n, stride, edge_at, at, segs, counts, points[:n])]
        segs = segs[:at.size]
        if at.size == 0:
            return SegmentGeometry(center, size, points)
        ray_x, ray_y = self._rays(intrinsics, raw.shape)
        xyz = np.empty((3, at.size), np.float32)
        box_points(at, raw, ray_x, ray_y, reached, scratch.reached_sum, scratch.reached_count, xyz, self._rows)
        cut = np.minimum(np.maximum(self.min_trim, np.floor(self.trim * counts)), np.maximum(counts - 1, 0) / 2)
        if cut.max() <= EXTREMES_UP_TO:  # the usual few points off each end: no sort
            low, high = _quantiles(segs, xyz, counts, cut, select="extremes", rows=self._rows)
        else:
            low, high = self._select(segs, xyz, counts, cut)
        has = np.flatnonzero(counts > 0)
        center[has] = ((low + high) / 2)[has]
        size[has] = (high - low)[has]
        return SegmentGeometry(center, size, points)

    def _smooth_and_cut(self, raw, focal):
        """Step 1: into scratch.smooth_padded the 3x3 median of the depth (the pixel's own
        depth where most of its neighbourhood has none; NaN where it has none either), and
        into scratch.cut the pixels without depth, behind a depth edge, or far from their
        neighbourhood's median (a flying pixel, an outlier: the median hides it, the box
        would not); into scratch.open those a ring in (scratch.inward) and not cut, for
        step 2. Two compiled passes (segments_3d_kernels.median_and_cuts) on padded
        buffers, the noise's sigma computed in them by the noise model."""
        scratch, noise = self._scratch, self.noise
        median_and_cuts(raw, scratch.finite_padded, scratch.smooth_padded, scratch.sparse, noise.sigma_at_1m, noise.exponent,
                        self.slope / focal, 1 / focal, MEDIAN_STEP_SIGMAS, KINK_SIGMAS, OUTLIER_SIGMAS, noise.quantum,
                        scratch.step_padded, scratch.kink_padded, scratch.cut, scratch.inward, scratch.open, self._rows)

    def _components(self):
        """Step 2: 4-connected surfaces (int32 image, 0 = none) within each mask less
        its outermost ring: no component spans two segments."""
        scratch = self._scratch  # scratch.open: inward above 0 and not cut (step 1's), where cut includes no depth
        count, comp = cv2.connectedComponents(scratch.open.view(np.uint8), labels=scratch.comp, connectivity=4, ltype=cv2.CV_32S)
        return comp, count

    def _component_stats(self, comp, size, ids, inward, raw, deep):
        """Per component, from every STATS_STRIDE-th pixel each way: its segment, interior
        score (squared distance from the mask's edge), samples beyond the margin or on a
        ridge, deepest level, nearest and farthest depth, and those at its deepest level.
        Compiled (segments_3d_kernels.component_stats)."""
        names = ("segment", "score", "deep", "top", "nearest", "farthest", "surface_nearest", "surface_farthest")
        values = component_stats(comp, ids, inward, self._scratch.ridge, raw, STATS_STRIDE, deep, size, self._rows)
        return dict(zip(names, values))

    def _segment_surfaces(self, stats, n, focal):
        """Step 3: which components are their segment's surface (bool per component),
        and each segment's depth range [1..n] (its main surface's samples at the deepest
        ring it reaches). The main surface: its segment's highest-scoring component.
        Further pieces of the same surface: beyond the margin or a thin part's ridge,
        within its depth range (an object that a pole in front of it splits in two, a
        pole on a crate that noise cuts off). Compiled
        (segments_3d_kernels.segment_surfaces)."""
        accepted = np.zeros(len(stats["segment"]), bool)
        low, high = np.full(n + 1, np.nan, np.float32), np.full(n + 1, np.nan, np.float32)
        slope_per_px, *noise_terms = self.tolerance_terms(focal)
        segment_surfaces(stats["segment"], stats["score"], stats["deep"], stats["nearest"], stats["farthest"],
                         stats["surface_nearest"], stats["surface_farthest"], n, slope_per_px, RAW_STEP_SIGMAS, *noise_terms,
                         accepted, low, high)
        return accepted, low, high

    def _reach(self, comp, accepted, inward, deep):
        """Step 4a: the accepted surfaces' pixels that the surface reaches from its
        interior or from the ridge of a thin part (where the distance from the mask's
        edge peaks), one ring outwards at a time: a step along a ring is not taken, so a
        strip of floor that a wide mask takes in along an object's side, connected to it
        only at the object's foot, is not reached from there. Bool image. Compiled
        (segments_3d_kernels.reach_outwards)."""
        scratch = self._scratch
        reach_outwards(comp, accepted, inward, scratch.ridge, deep, scratch.reached_padded, scratch.reached, self._rows)
        return scratch.reached

    def _kept_margin(self, ids, inward, raw, reached, low, high, n, deep, focal):
        """Step 4b: the margin pixels kept (flat indices, ascending).

        Kept: those the surface reached; those cut from no surface that continue the
        mean of their reached neighbours further in (the outermost ring; flying pixels
        and pixels behind an edge were cut); those amid holes within their surface's
        depth range (they cannot show that they continue anything). Then of these
        dropped: those whose depth is nearer the surface just outside the mask than the
        segment's interior nearby, where those two differ (a wide mask's strip of
        floor, wall or object behind); a grazing face or a curved rim stays."""
        scratch = self._scratch
        count = margin_candidates(ids, inward, reached, scratch.cut, scratch.sparse, deep, n, scratch.seeds_padded,
                                  scratch.margin_flags, scratch.margin_at, scratch.margin_kind, self._rows)
        slope_per_px, *noise_terms = self.tolerance_terms(focal)
        at = scratch.margin_at[:count]
        at = at[:kept_candidates(at, scratch.margin_kind[:count], raw, ids, scratch.reached_sum, scratch.reached_count, low,
                                 high, slope_per_px, RAW_STEP_SIGMAS, *noise_terms, at)].copy()  # in place
        # which surface each is nearer: the interior's, or the one just outside the mask
        ref_in, zs = self._interior_nearby(at, inward, reached, deep)
        doubtful = np.empty(at.size, np.int64)
        doubtful = doubtful[:doubtful_pixels(ref_in, zs, slope_per_px, MEDIAN_STEP_SIGMAS, *noise_terms, doubtful)]
        if doubtful.size:
            ref_out = self._outside_nearby(at[doubtful], inward)
            beyond = np.empty(doubtful.size, bool)
            nearer_outside(ref_in[doubtful], ref_out, zs[doubtful], slope_per_px, MEDIAN_STEP_SIGMAS, *noise_terms, beyond)
            at = at[:drop_pixels(at, doubtful, beyond)]
        return at

    def _interior_nearby(self, at, inward, reached, deep):
        """At margin pixels `at`, the depth of the segment's own interior nearby: the mean
        of its reached interior within `deep` pixels, or where there is none, of the
        reached pixels next to it. A pixel `deep` (1) inside its mask has no other
        segment within `deep` (1) pixels: each window sees one segment only. Compiled
        (segments_3d_kernels.interior_nearby): window sums at these pixels only. Also the
        pixels' own smoothed depth."""
        scratch = self._scratch
        nearby, own = np.empty(at.size, np.float32), np.empty(at.size, np.float32)
        interior_nearby(scratch.smooth_padded, inward, reached, deep, at, scratch.reached_sum, scratch.reached_count, nearby,
                        own, self._rows)
        return nearby, own

    def _outside_nearby(self, at, inward):
        """At margin pixels `at`, the depth of the surface just outside the mask: the mean,
        over the outermost-ring pixels within as many pixels as `at` is rings in (its own
        segment's only: no other segment is that close), of their neighbours' smoothed
        depth (step 1's) that belong to other segments. Compiled
        (segments_3d_kernels.outside_nearby)."""
        scratch = self._scratch
        out = np.empty(at.size, np.float32)
        outside_nearby(scratch.smooth_padded, scratch.ids_padded, scratch.rim, inward, at, scratch.ring_total,
                       scratch.ring_count, out, self._rows)
        return out

    def _rays(self, k: Intrinsics, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Per pixel (flat), x / z and y / z of its ray: back-projection is then a gather
        and a product per axis."""
        if self._ray_cache is None or self._ray_cache[0] != (k, shape):
            vs, us = np.indices(shape, np.float32)
            rays = backproject(us.ravel(), vs.ravel(), np.ones(us.size, np.float32), k)
            self._ray_cache = ((k, shape), rays[0], rays[1])
        return self._ray_cache[1], self._ray_cache[2]


def compile_3d_step() -> float:
    """Builds the 3D step's compiled loops (or loads them from numba's cache) on a small
    frame that takes every path, so that a node's first depth frame does not wait for
    them: about 15 s the first time on a 2-core x86 machine, well under a second from the
    cache. Returns the seconds it took."""
    start = time.perf_counter()
    ids = np.zeros((24, 32), np.int32)  # the node's panoptic images are int32
    ids[2:22, 3:29] = 1
    ids[7:17, 9:23] = 2  # its mask 2 px wider than its depth, on a surface behind that slopes away
    depth = 1.0 + 0.1 * np.arange(24, dtype=np.float32)[:, None] + np.zeros(32, np.float32)
    depth[9:15, 11:21] = 1.6
    depth += np.random.default_rng(0).normal(0, 0.01, depth.shape).astype(np.float32)
    depth[0, :5] = np.nan
    SegmentMeasurer()(ids, depth, Intrinsics(fx=30.0, fy=30.0, cx=15.5, cy=11.5), 2)
    return time.perf_counter() - start


def segment_geometry(panoptic: np.ndarray, depth: np.ndarray, intrinsics: Intrinsics, num_segments: int, **options) -> SegmentGeometry:
    """One-off SegmentMeasurer(**options)(...): for scripts and tests; a node keeps a measurer."""
    return SegmentMeasurer(**options)(panoptic, depth, intrinsics, num_segments)


def _quantiles(segs: np.ndarray, xyz: np.ndarray, counts: np.ndarray, cut: np.ndarray, resolution: float = 1e-4,
               select: str = "sort", rows=serial):
    """Per segment and axis ([n, 3] each), the values with `cut[segment]` of the segment's
    values below (low) and above (high); linear between neighbours for a fractional cut.

    To `resolution` metres (coarser only where n segments times the axis' span exceed
    2^30 steps): each value becomes an integer step count, and the box ends are the
    counts at known ranks within each segment. select: "sort" (one sort per axis of all
    points at once, the counts shifted by the segment index times more than the axis'
    whole span, so sorted keys keep segments apart and in order), "partition"
    (np.partition at just those positions) or "extremes" (one compiled pass keeping each
    segment's few smallest and largest counts: for small cuts; segments_3d_kernels.
    extreme_keys, on bands of the points: rows, serial or a RowBands). The same keys at
    those ranks each way, so the same result."""
    n = len(counts)
    segment = segs.astype(np.int32, copy=False)
    origin = xyz.min(axis=1).astype(np.float64)
    span = xyz.max(axis=1).astype(np.float64) - origin
    step = np.maximum(resolution, span * n / 2**30)
    counts = counts.astype(np.int64, copy=False)
    below, above, fraction = quantile_ranks(counts, np.asarray(cut, np.float64))  # [low end, high end] x segment
    if select == "extremes":
        from_bottom, from_top, depth = extreme_ranks(counts, below, above)
        lowest, highest = np.full((3, n, depth), np.iinfo(np.int32).max, np.int32), np.full((3, n, depth), -1, np.int32)
        extreme_keys(segment, xyz, origin.astype(np.float32), (1 / step).astype(np.float32), lowest, highest, rows)
        low, high = np.empty((n, 3)), np.empty((n, 3))
        extreme_ends(lowest, highest, from_bottom, from_top, fraction, step, origin, low, high)
        return low, high
    ranks_needed = np.unique(np.concatenate([below.ravel(), above.ravel()])) if select == "partition" else None
    out = np.empty((2, n, 3), np.float64)
    for axis in range(3):  # three axes, not segments or pixels
        spacing = int(span[axis] / step[axis]) + 2  # steps per segment: n * spacing < 2^31
        keys = segment * np.int32(spacing)
        keys += ((xyz[axis] - np.float32(origin[axis])) * np.float32(1 / step[axis])).astype(np.int32)
        if ranks_needed is None:
            keys.sort()
        else:
            keys.partition(ranks_needed)
        shift = np.arange(n) * spacing
        low, high = keys[below] - shift, keys[above] - shift
        out[:, :, axis] = (low + fraction * (high - low) + 0.5) * step[axis] + origin[axis]
    return out[0], out[1]


class SelectionTimer:
    """Picks _quantiles' selection for this CPU from the first frames' own points, as
    they come: each way is timed `trials` times, interleaved, and the faster median kept.

    Neither wins everywhere. np.sort is x86-simd-sort's vectorised quicksort (AVX2 or
    AVX-512); np.partition at several positions is numpy's scalar introselect. On an
    AVX2 machine sorting was 1.6x faster (1.2 against 1.9 ms a frame); on an AMD EPYC
    with AVX-512 it was 2.2x slower (3.65 against 1.68 ms), most likely Zen 4, where the
    AVX-512 sort's compress-store to memory is microcoded and slow (numpy/x86-simd-sort
    issue #6). Both give the same result, so the choice changes only time."""

    def __init__(self, trials: int = 3) -> None:
        self.trials = trials
        self.times: dict[str, list[float]] = {"sort": [], "partition": []}
        self.choice: str | None = None

    def __call__(self, segs, xyz, counts, cut):
        if self.choice is not None:
            return _quantiles(segs, xyz, counts, cut, select=self.choice)
        way = min(self.times, key=lambda name: len(self.times[name]))  # alternate
        start = time.perf_counter()
        result = _quantiles(segs, xyz, counts, cut, select=way)
        self.times[way].append(time.perf_counter() - start)
        if all(len(t) >= self.trials for t in self.times.values()):
            self.choice = min(self.times, key=lambda name: float(np.median(self.times[name])))
        return result
