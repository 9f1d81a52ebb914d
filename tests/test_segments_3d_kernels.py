"""The 3D step's compiled loops (segments_3d_kernels) against their definitions written
with OpenCV and numpy whole-image operations: the same values, bit for bit, on depth with
holes, flying pixels, steps, slopes, values far out (a floor to the horizon) and odd image
sizes, so that replacing the OpenCV passes changed no box."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from depth_scenes import K as SCENE_K
from depth_scenes import degrade, random_scene, segmenter_masks
from ovseg_ros.depth import DepthNoise
from ovseg_ros.segments_3d import KINK_SIGMAS, MEDIAN_STEP_SIGMAS, OUTLIER_SIGMAS, RAW_STEP_SIGMAS, SegmentMeasurer
from ovseg_ros.segments_3d_kernels import (
    RowBands,
    box_points,
    box_samples,
    clipped_ids,
    doubtful_pixels,
    drop_pixels,
    interior_nearby,
    kept_candidates,
    margin_candidates,
    mask_rings,
    median_and_cuts,
    nearer_outside,
    outside_nearby,
    reach_outwards,
    serial,
)


def depth_image(height, width, seed):
    """Planes at 0.5-8 m and one reaching 200 m, steps between them, a slope, noise, 5% holes,
    a few non-positive and infinite values, mixed pixels at the steps."""
    rng = np.random.default_rng(seed)
    vs, us = np.mgrid[0:height, 0:width].astype(np.float32)
    depth = np.where(vs > height / 2, 200.0 / np.maximum(vs - height / 2, 1), 6.0).astype(np.float32)
    for _ in range(6):
        top, left = rng.integers(0, height), rng.integers(0, width)
        depth[top:top + rng.integers(1, height // 2 + 2), left:left + rng.integers(1, width // 2 + 2)] = rng.uniform(0.5, 8)
    depth += (us * rng.uniform(-0.01, 0.01)).astype(np.float32)  # a slope across
    depth += rng.normal(0, 0.003, depth.shape).astype(np.float32)
    edge = np.zeros(depth.shape, bool)
    edge[:, 1:] = np.abs(np.diff(depth, axis=1)) > 0.1
    depth[edge] = depth[edge] * np.float32(0.5) + np.roll(depth, 1, axis=1)[edge] * np.float32(0.5)
    depth[rng.random(depth.shape) < 0.05] = np.nan
    bad = rng.random(depth.shape)
    depth[bad < 0.002] = 0.0
    depth[(bad >= 0.002) & (bad < 0.003)] = -1.0
    depth[(bad >= 0.003) & (bad < 0.004)] = np.inf
    return depth


def reference(raw, noise, slope_per_px, per_px):
    """Step 1 by its definition: OpenCV's 3x3 median of the valid depth (0 elsewhere), the
    raw depth where that is not above 0; tolerances as cv2.addWeighted; then per pixel
    and 4-neighbour q: cut where the pixel is deeper than q by more than q's step tolerance
    and the second difference centred on q exceeds q's kink tolerance (or is NaN); where
    it has no valid depth; where it is farther from its median than the outlier limit."""
    finite = np.isfinite(raw) & (raw > 0)
    smooth = cv2.medianBlur(np.where(finite, raw, 0).astype(np.float32), 3)
    sparse = smooth <= 0
    smooth = np.where(sparse, raw, smooth).astype(np.float32)
    sigma = cv2.multiply(smooth, smooth, scale=noise.sigma_at_1m) if noise.exponent == 2 else noise.sigma(smooth).astype(np.float32)
    step = cv2.addWeighted(smooth, slope_per_px, sigma, MEDIAN_STEP_SIGMAS, 2 * noise.quantum)
    kink = cv2.addWeighted(smooth, per_px, sigma, KINK_SIGMAS, 4 * noise.quantum)
    limit = cv2.addWeighted(smooth, slope_per_px, sigma, OUTLIER_SIGMAS, 2 * noise.quantum)
    pad = lambda a: np.pad(a, 2, constant_values=np.nan)
    s, t, k = pad(smooth), pad(step), pad(kink)
    height, width = raw.shape
    at = lambda a, dy, dx: a[2 + dy:2 + dy + height, 2 + dx:2 + dx + width]
    cut = ~finite
    with np.errstate(invalid="ignore"):
        for dy, dx in ((1, 0), (0, 1), (-1, 0), (0, -1)):
            near, beyond = at(s, dy, dx), at(s, 2 * dy, 2 * dx)
            second = np.abs((beyond - near) - (near - smooth))
            cut |= ((near - smooth) < -at(t, dy, dx)) & ~(second <= at(k, dy, dx))
        cut |= np.abs(raw - smooth) > limit
    return smooth, sparse, cut


@pytest.mark.parametrize("shape", [(480, 640), (211, 317), (1, 9), (2, 2), (37, 5)])
@pytest.mark.parametrize("noise", [DepthNoise(), DepthNoise(sigma_at_1m=0.004, exponent=1.0, quantum=0.0005)])
def test_median_and_cuts_equal_their_opencv_definition(shape, noise):
    height, width = shape
    raw = depth_image(height, width, seed=height * 1000 + width)
    focal = 525.0
    slope_per_px, per_px = float(np.tan(np.radians(45.0))) / focal, 1 / focal
    smooth_padded, step_padded, kink_padded = (np.full((height + 4, width + 4), np.nan, np.float32) for _ in range(3))
    sparse, cut = np.empty(shape, np.uint8), np.empty(shape, bool)
    inward, open_ = np.random.default_rng(height).integers(0, 5, shape).astype(np.uint8), np.empty(shape, bool)
    want_smooth, want_sparse, want_cut = reference(raw, noise, slope_per_px, per_px)
    for rows in (serial, RowBands(2)):
        median_and_cuts(raw, np.empty((height + 2, width + 2), np.float32), smooth_padded, sparse, noise.sigma_at_1m,
                        noise.exponent, slope_per_px, per_px, MEDIAN_STEP_SIGMAS, KINK_SIGMAS, OUTLIER_SIGMAS, noise.quantum,
                        step_padded, kink_padded, cut, inward, open_, rows)
        assert np.array_equal(smooth_padded[2:-2, 2:-2], want_smooth, equal_nan=True)
        assert np.isnan(smooth_padded[:2]).all() and np.isnan(smooth_padded[:, -2:]).all()
        assert np.array_equal(sparse != 0, want_sparse) and set(np.unique(sparse)) <= {0, 255}
        assert np.array_equal(cut, want_cut), f"{(cut != want_cut).sum()} of {cut.size} cuts differ"
        assert np.array_equal(open_, (inward > 0) & ~want_cut)
    assert want_cut.any() and not want_cut.all()


def id_image(height, width, seed):
    """Overlapping rectangles of ids 0-4, some cut by the border, some 1 px thin."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((height, width), np.uint16)
    for _ in range(rng.integers(1, 9)):
        top, left = rng.integers(-3, height), rng.integers(-3, width)
        bottom, right = top + rng.integers(1, 20), left + rng.integers(1, 20)
        ids[max(top, 0):max(bottom, 0), max(left, 0):max(right, 0)] = rng.integers(0, 5)
    return ids


@pytest.mark.parametrize("radius", [1, 3, 4, 6])
def test_mask_rings_equal_repeated_erosion(radius):
    """inward: the 3x3 erosions a pixel survives (whether the minimum, outside the image
    0, equals the maximum, edge replicated: OpenCV's erode and dilate r times); ridge:
    above 0 and at its 3x3 maximum (edge replicated)."""
    for seed in range(120):
        height, width = (5 + seed % 40, 4 + (seed * 7) % 45) if seed else (1, 1)
        ids = id_image(height, width, seed)
        low, high, want = ids.copy(), ids.copy(), np.zeros(ids.shape, np.uint8)
        for _ in range(radius):
            low = cv2.erode(low, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
            high = cv2.dilate(high, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
            want += low == high
        peak = cv2.dilate(want, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
        inward, ridge = np.empty(ids.shape, np.uint8), np.empty(ids.shape, bool)
        mask_rings(ids, radius, np.empty((height + 2 * radius, width + 2 * radius), np.uint16),
                   np.empty((height + 2 * radius, width), np.uint8), np.empty((height + 2, width + 2), np.uint8), inward, ridge)
        assert np.array_equal(inward, want), f"seed {seed}: {(inward != want).sum()} pixels differ"
        assert np.array_equal(ridge, (want == peak) & (want > 0)), f"seed {seed}"


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_clipped_ids_equal_numpy_clip_and_cast(threads):
    """An int32 panoptic image's ids (negative, 0, in range, past uint16, both int32
    extremes) clipped to uint16 as np.clip and astype do, on bands of rows too."""
    rng = np.random.default_rng(threads)
    for height, width in [(1, 2), (7, 13), (480, 640)]:
        panoptic = rng.integers(-70000, 140000, (height, width), dtype=np.int32)
        panoptic.ravel()[:2] = np.iinfo(np.int32).min, np.iinfo(np.int32).max
        ids = np.full((height, width), 7, np.uint16)
        clipped_ids(panoptic, ids, RowBands(threads))
        np.testing.assert_array_equal(ids, np.clip(panoptic, 0, 65535).astype(np.uint16))


@pytest.fixture(scope="module", params=[(3, "wide2"), (7, "blocky"), (11, "bleed_behind")])
def measured(request):
    """A measurer's buffers after one frame of a ray-cast scene (tests/depth_scenes.py) with
    a wrong mask: what the later loops read."""
    seed, mode = request.param
    scene = random_scene(seed)
    depth = degrade(scene, np.random.default_rng(seed))
    ids = segmenter_masks(scene, mode).astype(np.uint16)
    measurer = SegmentMeasurer()
    n = scene.num_objects + 2
    measurer(ids, depth, SCENE_K, n)
    return measurer, ids, depth, n


def test_margin_candidates_equal_their_opencv_definition(measured):
    measurer, ids, _, n = measured
    s, deep = measurer._scratch, measurer.mask_margin + 1
    inward, reached8 = s.inward, s.reached.view(np.uint8)
    open_ = (~s.cut & ~s.reached).view(np.uint8)
    grown = cv2.dilate(cv2.multiply(inward, reached8), np.ones((3, 3), np.uint8))
    joined = cv2.bitwise_and(cv2.compare(grown, inward, cv2.CMP_GT), open_)
    margin = cv2.bitwise_and(cv2.compare(inward, deep, cv2.CMP_LT), cv2.compare(ids, 0, cv2.CMP_NE))
    alone = cv2.bitwise_and(cv2.bitwise_and(cv2.compare(inward, 0, cv2.CMP_EQ), s.sparse), open_)
    want = np.flatnonzero(cv2.bitwise_and(reached8 | joined | alone, margin))
    want = want[ids.ravel()[want] <= n - 1]
    count = margin_candidates(ids, inward, s.reached, s.cut, s.sparse, deep, n - 1, s.seeds_padded, s.margin_flags,
                              s.margin_at, s.margin_kind)
    at, kind = s.margin_at[:count], s.margin_kind[:count]
    assert np.array_equal(at, want) and want.size > 1000
    for bit, image in ((1, reached8), (2, joined), (4, alone)):
        assert np.array_equal((kind & bit) != 0, image.ravel()[at] != 0)


def test_nearby_depths_equal_box_filters_and_integral_images(measured):
    """interior_nearby against box filters of the whole image, outside_nearby against
    integral images of the ring's neighbour sums (the OpenCV forms they replace)."""
    measurer, ids, _, _ = measured
    s, deep = measurer._scratch, measurer.mask_margin + 1
    at = np.flatnonzero(s.inward.ravel() < deep)
    interior = (s.inward >= deep) & s.reached
    window = (2 * deep + 1, 2 * deep + 1)
    values = np.where(interior, s.smooth, 0).astype(np.float32)
    total = cv2.boxFilter(values, -1, window, normalize=False, borderType=cv2.BORDER_CONSTANT).ravel()[at]
    count = cv2.boxFilter(interior.view(np.uint8), cv2.CV_16U, window, normalize=False,
                          borderType=cv2.BORDER_CONSTANT).ravel()[at]
    with np.errstate(invalid="ignore", divide="ignore"):
        fallback = s.reached_sum.ravel()[at] / s.reached_count.ravel()[at]
        want = np.where(count > 0, total / count, fallback).astype(np.float32)
    got, own = np.empty(at.size, np.float32), np.empty(at.size, np.float32)
    interior_nearby(s.smooth_padded, s.inward, s.reached, deep, at, s.reached_sum, s.reached_count, got, own)
    assert np.array_equal(got, want, equal_nan=True) and np.isfinite(want).mean() > 0.5
    assert np.array_equal(own, s.smooth.ravel()[at], equal_nan=True)

    height, width = ids.shape
    padded_ids = np.pad(ids, 1)
    padded_smooth = s.smooth_padded[1:-1, 1:-1]
    ring = s.inward == 0
    ring_total, ring_count = np.zeros(ids.shape, np.float32), np.zeros(ids.shape, np.uint8)
    for dy, dx in ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)):
        zo = padded_smooth[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
        ok = (padded_ids[1 + dy:1 + dy + height, 1 + dx:1 + dx + width] != ids) & np.isfinite(zo) & ring
        ring_total += np.where(ok, zo, 0)
        ring_count += ok
    sums = cv2.integral(ring_total, sdepth=cv2.CV_64F), cv2.integral(ring_count, sdepth=cv2.CV_32S)
    v, u = np.divmod(at, width)
    r = s.inward.ravel()[at].astype(np.int64)
    top, bottom = np.clip(v - r, 0, height), np.clip(v + r + 1, 0, height)
    left, right = np.clip(u - r, 0, width), np.clip(u + r + 1, 0, width)
    total, count = ((a[bottom, right] - a[top, right] - a[bottom, left] + a[top, left]) for a in sums)
    with np.errstate(invalid="ignore", divide="ignore"):
        want = (total / count).astype(np.float32)
    outside_nearby(s.smooth_padded, s.ids_padded, s.rim, s.inward, at, s.ring_total, s.ring_count, got)
    assert np.array_equal(got, want, equal_nan=True) and np.isfinite(want).mean() > 0.5


def test_component_stats_and_reach_equal_their_numpy_and_opencv_forms(measured):
    measurer, ids, depth, n = measured
    s, deep = measurer._scratch, measurer.mask_margin + 1
    comp = s.comp
    size = int(comp.max()) + 1
    stats = measurer._component_stats(comp, size, ids, s.inward, depth, deep)
    grid = np.arange(comp.size).reshape(comp.shape)[::3, ::3].ravel()
    at = grid[comp.ravel()[grid] != 0]
    c, level, z = comp.ravel()[at], s.inward.ravel()[at], depth.ravel()[at]
    weight = level.astype(np.float32)
    assert np.array_equal(stats["score"], np.bincount(c, weights=weight * weight, minlength=size))
    assert np.array_equal(stats["deep"], np.bincount(c, weights=(level >= deep) | s.ridge.ravel()[at], minlength=size))
    top, nearest, farthest = np.zeros(size, np.uint8), np.full(size, np.nan, np.float32), np.full(size, np.nan, np.float32)
    np.maximum.at(top, c, level)
    np.fmin.at(nearest, c, z)
    np.fmax.at(farthest, c, z)
    assert np.array_equal(stats["top"], top)
    assert np.array_equal(stats["nearest"], nearest, equal_nan=True) and np.array_equal(stats["farthest"], farthest, equal_nan=True)
    at_top = level == top[c]  # the samples at their component's deepest ring
    nearest[:], farthest[:] = np.nan, np.nan
    np.fmin.at(nearest, c[at_top], z[at_top])
    np.fmax.at(farthest, c[at_top], z[at_top])
    assert np.array_equal(stats["surface_nearest"], nearest, equal_nan=True)
    assert np.array_equal(stats["surface_farthest"], farthest, equal_nan=True)
    assert (nearest > stats["nearest"]).any()  # the deepest ring's range is not the whole component's
    segment = np.zeros(size, np.int64)
    segment[c] = ids.ravel()[at]
    assert np.array_equal(stats["segment"], segment)

    accepted, _, _ = measurer._segment_surfaces(stats, n, 525.0)  # as the call did
    on = accepted[comp]
    want = ((s.inward >= deep) | s.ridge) & on
    for level in range(deep - 1, -1, -1):
        grown = cv2.dilate(want.view(np.uint8), cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)))
        want |= grown.view(bool) & (s.inward == level) & on
    got = measurer._reach(comp, accepted, s.inward, deep)
    assert np.array_equal(got, want) and want.sum() > 1000 and (want & (s.inward < deep)).any()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_reach_on_bands_equals_ring_by_ring_dilation(threads):
    """reach_outwards on bands of rows (each grows its rows and `deep` rows each side in a
    buffer of its own) against ring-by-ring cross dilation of the whole image, on small
    images where a band is a row or two and its halo reaches past the border, and rings
    that grow across the bands' seams."""
    for seed in range(60):
        height, width = 1 + seed % 23, 3 + (seed * 5) % 31
        deep = 1 + seed % 5
        ids = id_image(height, width, seed)
        inward, ridge = np.empty(ids.shape, np.uint8), np.empty(ids.shape, bool)
        mask_rings(ids, deep, np.empty((height + 2 * deep, width + 2 * deep), np.uint16),
                   np.empty((height + 2 * deep, width), np.uint8), np.empty((height + 2, width + 2), np.uint8), inward, ridge)
        rng = np.random.default_rng(seed)
        comp = np.where(inward > 0, ids.astype(np.int32) + 5 * rng.integers(0, 2, ids.shape), 0).astype(np.int32)
        accepted = rng.random(int(comp.max()) + 1) < 0.7
        on = accepted[comp]
        want = ((inward >= deep) | ridge) & on
        for level in range(deep - 1, -1, -1):
            grown = cv2.dilate(want.view(np.uint8), cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)))
            want |= grown.view(bool) & (inward == level) & on
        padded, reached = np.full((height + 2, width + 2), 9, np.uint8), np.empty(ids.shape, bool)
        reach_outwards(comp, accepted, inward, ridge, deep, padded, reached, RowBands(threads))
        assert np.array_equal(reached, want), f"seed {seed}: {(reached != want).sum()} pixels differ"
        assert np.array_equal(padded, np.pad(want.view(np.uint8), 1)), f"seed {seed}"


def test_box_samples_and_dropped_pixels_equal_their_numpy_form(measured):
    """box_samples against the numpy it replaced: the reached interior on every stride-th
    pixel each way (grid order), then the margin's pixels; their segment indices, counts
    and surface points by np.bincount. drop_pixels against a boolean index."""
    measurer, ids, _, n = measured
    s, deep, stride = measurer._scratch, measurer.mask_margin + 1, measurer.stride
    rng = np.random.default_rng(0)
    inside = (ids >= 1) & (ids <= n)
    edge_at = np.flatnonzero(inside.ravel() & (s.inward.ravel() < deep) & (rng.random(ids.size) < 0.5))
    grid = np.arange(ids.size).reshape(ids.shape)[::stride, ::stride].ravel()
    interior = grid[s.reached.ravel()[grid] & (s.inward.ravel()[grid] >= deep) & inside.ravel()[grid]]
    want_at = np.concatenate([interior, edge_at])
    want_segs = ids.ravel()[want_at].astype(np.int64) - 1
    want_points = np.bincount(want_segs[:interior.size], minlength=n) * stride * stride
    want_points += np.bincount(want_segs[interior.size:], minlength=n)
    at, segs = np.empty(grid.size + edge_at.size, np.int64), np.empty(grid.size + edge_at.size, np.int32)
    counts, points = np.zeros(n, np.int64), np.zeros(n, np.int64)
    k = box_samples(s.reached, s.inward, ids, deep, n, stride, edge_at, at, segs, counts, points)
    assert np.array_equal(at[:k], want_at) and np.array_equal(segs[:k], want_segs)
    assert np.array_equal(counts, np.bincount(want_segs, minlength=n)) and np.array_equal(points, want_points)
    assert interior.size > 100 and edge_at.size > 100
    which = np.sort(rng.choice(edge_at.size, edge_at.size // 3, replace=False))
    drop = rng.random(which.size) < 0.5
    gone = np.zeros(edge_at.size, bool)
    gone[which[drop]] = True
    kept = edge_at.copy()
    assert np.array_equal(kept[:drop_pixels(kept, which, drop)], edge_at[~gone]) and gone.any()


def test_reached_sums_and_box_points_equal_box_filters(measured):
    measurer, _, depth, _ = measured
    s = measurer._scratch
    reached8 = s.reached.view(np.uint8)
    want_sum = cv2.boxFilter(np.where(s.reached, depth, 0).astype(np.float32), -1, (3, 3), normalize=False,
                             borderType=cv2.BORDER_CONSTANT)
    want_count = cv2.boxFilter(reached8, cv2.CV_16U, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)
    assert np.array_equal(s.reached_sum, want_sum) and np.array_equal(s.reached_count, want_count)
    at = np.flatnonzero(s.reached.ravel() | (s.reached_count.ravel() > 0))
    ray_x, ray_y = measurer._rays(SCENE_K, depth.shape)
    xyz = np.empty((3, at.size), np.float32)
    box_points(at, depth, ray_x, ray_y, s.reached, s.reached_sum, s.reached_count, xyz)
    z = depth.ravel()[at]
    alone = ~s.reached.ravel()[at]
    averaged = ((want_sum.ravel()[at] + np.where(alone, z, 0)) / (want_count.ravel()[at] + alone)).astype(np.float32)
    assert np.array_equal(xyz, np.stack([ray_x[at] * z, ray_y[at] * z, averaged]), equal_nan=True)


def overlaps(model, nearest, farthest, low, high, focal):
    """Whether depths from `nearest` to `farthest` meet a surface's [low, high], widened by
    the model's step tolerance at each end (elementwise; NaN: no)."""
    with np.errstate(invalid="ignore"):
        return (farthest >= low - model.step_tolerance(low, focal)) & (nearest <= high + model.step_tolerance(high, focal))


def segment_surfaces_numpy(model, stats, n, focal):
    """Step 3 as numpy: per segment its components with a score sorted by (segment,
    score), stably; the last of each segment is its main surface and sets its depth range;
    the others are accepted with samples beyond the margin and depths within that range."""
    segment, score = stats["segment"], stats["score"]
    candidates = np.flatnonzero((score > 0) & (segment >= 1) & (segment <= n))
    accepted = np.zeros(len(segment), bool)
    low, high = np.full(n + 1, np.nan, np.float32), np.full(n + 1, np.nan, np.float32)
    order = candidates[np.lexsort((score[candidates], segment[candidates]))]
    owner = segment[order]
    last = np.r_[owner[1:] != owner[:-1], True] if order.size else np.zeros(0, bool)
    accepted[order[last]] = True
    low[owner[last]], high[owner[last]] = stats["surface_nearest"][order[last]], stats["surface_farthest"][order[last]]
    others = order[~last]
    overlap = overlaps(model, stats["nearest"][others], stats["farthest"][others], low[segment[others]],
                       high[segment[others]], focal)
    accepted[others[(stats["deep"][others] > 0) & overlap]] = True
    return accepted, low, high


@pytest.mark.parametrize("noise", [DepthNoise(), DepthNoise(sigma_at_1m=0.004, exponent=1.0, quantum=0.0005)])
def test_segment_surfaces_equal_their_numpy_form(measured, noise):
    """segment_surfaces against the numpy it replaced: on a real frame's components, and on
    made-up statistics with ties in score, NaN depths, segments past n and none at all."""
    measurer, ids, depth, n = measured
    s, deep = measurer._scratch, measurer.mask_margin + 1
    model = SegmentMeasurer(noise=noise)
    real = measurer._component_stats(s.comp, int(s.comp.max()) + 1, ids, s.inward, depth, deep)
    rng = np.random.default_rng(n)
    size = 400
    nearest = rng.uniform(0.5, 6, size).astype(np.float32)
    made_up = {"segment": rng.integers(0, n + 3, size), "score": rng.integers(0, 4, size).astype(np.float64),
               "deep": rng.integers(0, 2, size).astype(np.float64), "nearest": nearest,
               "farthest": nearest + rng.uniform(0, 0.3, size).astype(np.float32),
               "surface_nearest": nearest + 0.01, "surface_farthest": nearest + rng.uniform(0, 0.2, size).astype(np.float32)}
    made_up["nearest"][rng.random(size) < 0.05] = np.nan
    made_up["surface_nearest"][rng.random(size) < 0.05] = np.nan
    empty = {name: values[:0] for name, values in made_up.items()}
    for stats in (real, made_up, empty):
        got = model._segment_surfaces(stats, n, 525.0)
        want = segment_surfaces_numpy(model, stats, n, 525.0)
        for g, w in zip(got, want):
            assert np.array_equal(g, w, equal_nan=True)
    scored = (made_up["score"] > 0) & (made_up["segment"] >= 1) & (made_up["segment"] <= n)
    mains = np.unique(made_up["segment"][scored]).size
    accepted = segment_surfaces_numpy(model, made_up, n, 525.0)[0]
    assert mains < accepted.sum() < scored.sum()  # further pieces accepted, and some refused


@pytest.mark.parametrize("noise", [DepthNoise(), DepthNoise(sigma_at_1m=0.004, exponent=1.0, quantum=0.0005),
                                   DepthNoise(sigma_at_1m=0.002, exponent=1.5, quantum=0.0)])
def test_margin_decisions_equal_their_numpy_form(measured, noise):
    """kept_candidates, doubtful_pixels and nearer_outside against the numpy expressions
    they replaced, with the measurer's step_tolerance (three noise models), on a real
    frame's margin and on made-up depths with NaN. Bit for bit for exponents 1 and 2; for
    others numpy's float32 power may be its own SIMD one (AVX-512) and the loop's is
    libm's powf, a last-bit difference that can flip a decision at an exact tie only."""
    measurer, ids, depth, n = measured
    s, deep = measurer._scratch, measurer.mask_margin + 1
    model = SegmentMeasurer(noise=noise)
    focal = float(min(SCENE_K.fx, SCENE_K.fy))
    terms = model.tolerance_terms(focal)
    count = margin_candidates(ids, s.inward, s.reached, s.cut, s.sparse, deep, n - 1, s.seeds_padded, s.margin_flags,
                              s.margin_at, s.margin_kind)
    at, kind = s.margin_at[:count].copy(), s.margin_kind[:count].copy()
    rng = np.random.default_rng(count)
    low = rng.uniform(0.5, 6, n).astype(np.float32)
    high = low + rng.uniform(0, 0.5, n).astype(np.float32)
    low[rng.random(n) < 0.2] = np.nan
    z, seg = depth.ravel()[at], ids.ravel()[at]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s.reached_sum.ravel()[at] / s.reached_count.ravel()[at]
        keep = ((kind & 1) != 0) | (((kind & 2) != 0) & (np.abs(z - mean) <= model.step_tolerance(z, focal)))
        keep |= ((kind & 4) != 0) & overlaps(model, z, z, low[seg], high[seg], focal)
    got = at.copy()
    got = got[:kept_candidates(got, kind, depth, ids, s.reached_sum, s.reached_count, low, high, terms[0], RAW_STEP_SIGMAS,
                               *terms[1:], got)]
    same = _same_or_ties if noise.exponent not in (1, 2) else np.array_equal
    assert same(got, at[keep]) and 0 < got.size < at.size
    inside = (z + rng.normal(0, 0.05, z.size)).astype(np.float32)
    inside[rng.random(z.size) < 0.05] = np.nan
    outside = (z + rng.normal(0, 0.3, z.size)).astype(np.float32)
    outside[rng.random(z.size) < 0.05] = np.nan
    with np.errstate(invalid="ignore"):
        want = np.flatnonzero(~(np.abs(z - inside) <= model.step_tolerance(inside, focal, MEDIAN_STEP_SIGMAS) / 2))
        apart = np.abs(inside - outside) > model.step_tolerance(np.fmin(inside, outside), focal, MEDIAN_STEP_SIGMAS)
        beyond = apart & (np.abs(z - outside) < np.abs(z - inside))
    doubtful = np.empty(z.size, np.int64)
    doubtful = doubtful[:doubtful_pixels(inside, z, terms[0], MEDIAN_STEP_SIGMAS, *terms[1:], doubtful)]
    assert same(doubtful, want) and 0 < want.size < z.size
    got_beyond = np.empty(z.size, bool)
    nearer_outside(inside, outside, z, terms[0], MEDIAN_STEP_SIGMAS, *terms[1:], got_beyond)
    assert same(np.flatnonzero(got_beyond), np.flatnonzero(beyond)) and beyond.any() and not beyond.all()


def _same_or_ties(got, want):
    """The same indices but for at most one in a thousand (last-bit ties)."""
    return np.setxor1d(got, want).size <= max(1, want.size // 1000)


def test_compile_3d_step_builds_every_loop_a_frame_uses():
    """The node builds the loops at configure (compile_3d_step) so that its first depth
    frame does not wait seconds for numba: after it, a real frame (another size, wide
    masks, holes, flying pixels) adds no compiled signature. In a fresh process, so that
    the other tests' calls do not build them first."""
    script = """
import numba, numpy as np
from depth_scenes import K, degrade, random_scene, segmenter_masks
import ovseg_ros.segments_3d_kernels as kernels
from ovseg_ros.segments_3d import SegmentMeasurer, compile_3d_step
loops = {name: f for name, f in vars(kernels).items() if isinstance(f, numba.core.registry.CPUDispatcher)}
compile_3d_step()
built = {name: len(f.signatures) for name, f in loops.items()}
scene = random_scene(5)
SegmentMeasurer()(segmenter_masks(scene, "wide3").astype(np.int32), degrade(scene, np.random.default_rng(5)), K,
                  scene.num_objects + 2)
print(sorted(name for name, f in loops.items() if len(f.signatures) != built[name]))
print(sorted(name for name, n in built.items() if n == 0 and not name.startswith("_")))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    added, unbuilt = done.stdout.strip().splitlines()
    assert added == "[]", f"built on the first real frame, not at configure: {added}"
    assert unbuilt == "[]", f"never built by compile_3d_step: {unbuilt}"


@pytest.mark.parametrize("threads", [2, 3])
def test_bands_of_rows_give_the_serial_boxes(measured, threads):
    """The loops on bands of rows at once (RowBands) write each band's own rows and read
    their neighbours' only after the loop that wrote them: the same boxes, bit for bit,
    as on the calling thread alone, also for bands that split a row's pixels, and wherever
    the bands are cut (the calling thread's share set to 0.3 and 0.8 of every loop)."""
    _, ids, depth, n = measured
    serial_boxes = SegmentMeasurer(threads=1)(ids, depth, SCENE_K, n)
    banded = SegmentMeasurer(threads=threads)
    for share in (None, None, 0.3, 0.8):  # the second frame reuses the workers and the buffers
        if share is not None:
            banded._rows.shares = dict.fromkeys(banded._rows.shares, share)
        boxes = banded(ids, depth, SCENE_K, n)
        for field in ("center", "size", "points"):
            np.testing.assert_array_equal(getattr(boxes, field), getattr(serial_boxes, field))


def test_row_bands_keep_short_loops_on_the_calling_thread():
    """A loop too short to gain from a worker goes to the calling thread alone after
    NO_GAIN_CALLS more banded calls without gain than with (a noisy call may seem to
    gain), and is tried on bands once every PROBE_EVERY calls after."""
    def short(start, stop, out):
        out[start:stop] += 1
        return stop - start

    out, bands = np.zeros(10), RowBands(2)
    banded = 0
    while bands.shares.get(short, 0.5) < 1.0 and banded < 10 * RowBands.NO_GAIN_CALLS:
        assert len(bands(short, 10, out)) == 2
        banded += 1
    assert bands.shares[short] == 1.0 and banded >= RowBands.NO_GAIN_CALLS
    parts = [len(bands(short, 10, out)) for _ in range(RowBands.PROBE_EVERY)]
    assert parts == [1] * (RowBands.PROBE_EVERY - 1) + [2]
    assert np.all(out == banded + RowBands.PROBE_EVERY)


def test_row_bands_wait_for_every_band_and_raise_its_error():
    def loop(start, stop, out):
        if start > 0:
            raise ValueError("a worker's band failed")
        out[start:stop] = 1
        return stop - start

    out = np.zeros(10)
    bands = RowBands(2)
    assert [part[2] for part in bands(loop, 1, out)] == [1]  # one row: one band, on the calling thread
    with pytest.raises(ValueError, match="worker's band"):
        bands(loop, 10, out)
    assert out[:5].sum() == 5
    out[:] = 0  # the failed band's worker takes the next band
    assert [part[2] for part in bands(lambda start, stop, out: loop(0, stop - start, out[start:stop]), 10, out)] == [5, 5]
    assert out.sum() == 10
    with pytest.raises(ValueError, match="threads"):
        RowBands(0)
    with pytest.raises(ValueError, match="threads"):
        SegmentMeasurer(threads=0)
