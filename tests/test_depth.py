"""Segments in 3D against scenes of known geometry: a floor and boxes at known
distances, rendered to depth with known intrinsics (ray casting), with noise, invalid
pixels and flying pixels at depth edges; masks as a segmenter would give them."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg_ros.depth import POINT_DTYPE, DepthError, DepthNoise, Intrinsics, decode_depth, point_cloud
from ovseg_ros.segments_3d import SegmentMeasurer, SelectionTimer, _quantiles, _Scratch, segment_geometry
from ovseg_ros.segments_3d_kernels import RowBands, serial
from support import make_camera_info, make_header

HEIGHT, WIDTH = 480, 640
K = Intrinsics(fx=525.0, fy=525.0, cx=319.5, cy=239.5)
CAMERA_HEIGHT = 1.0  # metres above the floor (the floor is the plane y = +1 in the optical frame)


def render(boxes: list[tuple[np.ndarray, np.ndarray]], k: Intrinsics = K):
    """Ray-cast a floor and axis-aligned boxes [(min corner, max corner), ...] in the
    camera frame -> (depth [H, W] metres, labels [H, W]: box i is i + 1, the floor
    len(boxes) + 1, nothing 0)."""
    vs, us = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    rays = np.stack([(us - k.cx) / k.fx, (vs - k.cy) / k.fy, np.ones_like(us)], axis=-1)  # z component 1: t = depth
    depth = np.full((HEIGHT, WIDTH), np.inf)
    labels = np.zeros((HEIGHT, WIDTH), np.int64)
    floor_t = np.where(rays[..., 1] > 1e-9, CAMERA_HEIGHT / np.maximum(rays[..., 1], 1e-9), np.inf)
    hit = floor_t < 20.0
    depth[hit], labels[hit] = floor_t[hit], len(boxes) + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = 1.0 / rays
    for i, (low, high) in enumerate(boxes):  # slab test over all pixels at once
        t0, t1 = (low - 0.0) * inverse, (high - 0.0) * inverse
        near = np.nanmax(np.minimum(t0, t1), axis=-1)
        far = np.nanmin(np.maximum(t0, t1), axis=-1)
        box_hit = (far >= near) & (near > 0) & (near < depth)
        depth[box_hit], labels[box_hit] = near[box_hit], i + 1
    depth[~np.isfinite(depth)] = np.nan
    return depth.astype(np.float32), labels


def visible_truth(depth: np.ndarray, labels: np.ndarray, box: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre and size of the box's visible surface, from the clean render."""
    vs, us = np.nonzero(labels == box)
    z = depth[vs, us].astype(np.float64)
    xyz = np.stack([(us - K.cx) * z / K.fx, (vs - K.cy) * z / K.fy, z], axis=1)
    low, high = xyz.min(0), xyz.max(0)
    return (low + high) / 2, high - low


BOXES = [  # a pallet-sized box ahead, a tall one to the left, a small one to the right; all on the floor
    (np.array([-0.40, 0.55, 2.5]), np.array([0.40, 1.0, 3.3])),
    (np.array([-1.60, 0.10, 3.0]), np.array([-1.00, 1.0, 3.5])),
    (np.array([1.40, 0.70, 3.0]), np.array([1.80, 1.0, 3.4])),
]


FLAT_NOISE = DepthNoise(0.002, 0.0, 0.001)  # degrade's sensor: 2 mm at any depth (the measurer takes 1 mm steps at least)


def degrade(depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor effects: Gaussian noise (sigma 2 mm), 5% invalid pixels, and flying pixels
    along depth edges (each edge pixel takes a depth between its own and its neighbour's)."""
    noisy = depth + rng.normal(0, 0.002, depth.shape).astype(np.float32)
    neighbour = np.roll(depth, 1, axis=1)
    edge = np.abs(neighbour - depth) > 0.1
    mix = rng.uniform(0.2, 0.8, depth.shape).astype(np.float32)
    noisy = np.where(edge, mix * depth + (1 - mix) * neighbour, noisy)
    noisy[rng.random(depth.shape) < 0.05] = np.nan
    return noisy.astype(np.float32)


def segmenter_masks(labels: np.ndarray) -> np.ndarray:
    """Masks as a segmenter gives them: each box's mask one pixel too wide (it bleeds onto
    the background), the floor kept as it is."""
    import cv2

    out = labels.copy()
    for box in range(1, len(BOXES) + 1):
        grown = cv2.dilate((labels == box).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        out[grown] = box
    return out


@pytest.mark.parametrize("seed", range(5))
def test_boxes_within_a_centimetre_and_sizes_within_two(seed):
    clean, labels = render(BOXES)
    depth = degrade(clean, np.random.default_rng(seed))
    geometry = segment_geometry(segmenter_masks(labels), depth, K, num_segments=len(BOXES) + 1, noise=FLAT_NOISE)
    for box in range(1, len(BOXES) + 1):
        centre, size = visible_truth(clean, labels, box)
        assert np.abs(geometry.center[box - 1] - centre).max() <= 0.01, (box, geometry.center[box - 1], centre)
        assert np.abs(geometry.size[box - 1] - size).max() <= 0.02, (box, geometry.size[box - 1], size)
        assert geometry.points[box - 1] > 500


def test_flying_pixels_do_not_move_the_box():
    clean, labels = render(BOXES)
    masks = segmenter_masks(labels)
    plain = segment_geometry(masks, clean, K, len(BOXES) + 1)
    depth = clean.copy()
    edge = np.zeros_like(labels, dtype=bool)
    edge[:, 1:] = labels[:, 1:] != labels[:, :-1]
    depth[edge & (masks == 1)] = 9.0  # the worst case: edge pixels of box 1 far behind it
    flying = segment_geometry(masks, depth, K, len(BOXES) + 1)
    assert np.abs(flying.center[0] - plain.center[0]).max() <= 0.005
    assert np.abs(flying.size[0] - plain.size[0]).max() <= 0.01


def test_segments_without_depth_have_no_box():
    clean, labels = render(BOXES)
    depth = clean.copy()
    depth[labels == 3] = np.nan
    geometry = segment_geometry(labels, depth, K, len(BOXES) + 2)  # one id more than the scene has
    assert geometry.points[2] == 0 and np.isnan(geometry.center[2]).all()
    assert geometry.points[4] == 0 and np.isnan(geometry.size[4]).all()


def test_trimmed_extremes_are_order_statistics_at_any_span():
    """The box ends are the values with `cut` points beyond them, per segment and axis, to
    0.1 mm, also for a segment spanning hundreds of metres (the floor to the horizon)."""
    rng = np.random.default_rng(0)
    segs = rng.integers(0, 6, 5000)
    xyz = rng.normal(0, 1, (3, segs.size)).astype(np.float32) * np.float32(0.3)
    xyz[:, segs == 5] *= np.float32(400)  # a segment 100s of metres wide
    counts = np.bincount(segs, minlength=7)  # segment 6 has no point
    cut = np.minimum(np.maximum(3, np.floor(0.01 * counts)), np.maximum(counts - 1, 0) / 2)
    low, high = _quantiles(segs, xyz, counts, cut)
    for seg in range(6):
        for axis in range(3):
            ordered = np.sort(xyz[axis, segs == seg].astype(np.float64))
            c = int(cut[seg])
            assert abs(low[seg, axis] - ordered[c]) <= 1e-4 and abs(high[seg, axis] - ordered[-1 - c]) <= 1e-4
    # a partial sort at the ranks needed gives the same keys there: the same result, bit for bit
    # and so does keeping each segment's few extreme keys in one pass
    fractional = np.minimum(0.013 * counts, np.maximum(counts - 1, 0) / 2)  # between neighbours
    two = np.bincount(np.r_[segs, 6, 6], minlength=7)  # a segment of two points: cut 0.5, the mean of both
    # (extremes also on 2 and 3 bands of the points, merged: the same keys)
    for select, rows in (("partition", serial), ("extremes", serial), ("extremes", RowBands(2)), ("extremes", RowBands(3))):
        for c, n in ((cut, counts), (fractional, counts), (np.minimum(1, np.maximum(two - 1, 0) / 2), two)):
            s, v = (segs, xyz) if n is counts else (np.r_[segs, 6, 6], np.c_[xyz, [[1, 2]] * 3].astype(np.float32))
            by_sort, other = _quantiles(s, v, n, c), _quantiles(s, v, n, c, select=select, rows=rows)
            has = n > 0  # a segment without points has no box, whatever these say
            assert np.array_equal(by_sort[0][has], other[0][has]) and np.array_equal(by_sort[1][has], other[1][has]), select


def test_selection_timer_settles_on_one_way_and_changes_no_result():
    rng = np.random.default_rng(1)
    segs = rng.integers(0, 4, 3000)
    xyz = rng.normal(0, 1, (3, segs.size)).astype(np.float32)
    counts = np.bincount(segs)
    cut = np.ones(4)
    timer = SelectionTimer(trials=2)
    expected = _quantiles(segs, xyz, counts, cut)
    for _ in range(5):
        low, high = timer(segs, xyz, counts, cut)
        assert np.array_equal(low, expected[0]) and np.array_equal(high, expected[1])
    assert timer.choice in ("sort", "partition") and all(len(t) == 2 for t in timer.times.values())


def test_rings_count_pixels_from_the_mask_edge_and_the_image_border():
    """inward: how many 3x3 erosions a pixel survives, capped; the image border is an edge
    too (a wide mask reaches it over the wall beside an object as well as over it)."""
    labels = np.zeros((9, 9), np.uint16)
    labels[1:8, 1:8] = 3
    labels[:, 8] = 3  # touches the right border
    inward = _Scratch(labels.shape).inward_steps(labels, 4).copy()
    assert inward[4, 4] == 3 and inward[1, 1] == 0 and inward[2, 2] == 1 and inward[4, 8] == 0
    assert (inward[0] == 0).all()


def test_clear_errors_off_the_node_path():
    with pytest.raises(DepthError, match="positive focal lengths"):
        Intrinsics(fx=0.0, fy=525.0, cx=319.5, cy=239.5)
    with pytest.raises(DepthError, match="finite numbers"):
        Intrinsics(fx=float("nan"), fy=525.0, cx=319.5, cy=239.5)
    clean, labels = render(BOXES)
    with pytest.raises(DepthError, match="does not match the panoptic image"):
        segment_geometry(labels, clean[:, :320], K, len(BOXES) + 1)
    with pytest.raises(ValueError, match="neither a preset"):
        DepthNoise.parse("kinect")
    assert DepthNoise.parse("0.002,1").sigma(3.0) == pytest.approx(0.006)
    assert DepthNoise.parse("realsense_d435").sigma_at_1m > DepthNoise().sigma_at_1m
    with pytest.raises(ValueError):
        SegmentMeasurer(mask_margin=-1)


def test_point_cloud_fields_and_counts():
    clean, labels = render(BOXES)
    depth = clean.copy()
    depth[::7, ::5] = np.nan
    rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    rgb[..., 0] = 200
    semantic = np.where(labels > 0, labels - 1, -1)
    cloud = point_cloud(labels, semantic, rgb, depth, K, decimation=2)
    assert cloud.dtype == POINT_DTYPE and cloud.dtype.itemsize == 24
    assert len(cloud) == int(np.isfinite(depth[::2, ::2]).sum())
    packed = cloud["rgb"].view(np.uint32)
    assert (packed == (200 << 16)).all()
    assert set(np.unique(cloud["segment_id"])) <= {0, 1, 2, 3, 4}
    box_points = cloud[cloud["segment_id"] == 1]
    assert (box_points["class_index"] == 0).all() and np.all(box_points["z"] >= 2.5 - 1e-3)
    assert (cloud[cloud["segment_id"] == 0]["class_index"] == 65535).all()


def _depth_message(typestore, array: np.ndarray, encoding: str):
    return typestore.types["sensor_msgs/msg/Image"](
        header=make_header(typestore), height=array.shape[0], width=array.shape[1], encoding=encoding, is_bigendian=0,
        step=array.shape[1] * array.itemsize, data=np.ascontiguousarray(array).reshape(-1).view(np.uint8),
    )


def test_depth_encodings_and_problems(typestore):
    millimetres = np.array([[0, 1500], [2000, 65535]], dtype="<u2")
    depth = decode_depth(_depth_message(typestore, millimetres, "16UC1"), (2, 2))
    assert np.isnan(depth[0, 0]) and depth[0, 1] == pytest.approx(1.5) and depth[1, 1] == pytest.approx(65.535)
    metres = np.array([[np.nan, 1.25], [-1.0, np.inf]], dtype="<f4")
    depth = decode_depth(_depth_message(typestore, metres, "32FC1"), (2, 2))
    assert np.isnan(depth).sum() == 3 and depth[0, 1] == pytest.approx(1.25)
    problems = [
        (_depth_message(typestore, millimetres, "mono8"), (2, 2), "unsupported depth encoding"),
        (_depth_message(typestore, millimetres, "16UC1"), (4, 4), "must be aligned"),
        (_depth_message(typestore, np.zeros((2, 2), "<u2"), "16UC1"), (2, 2), "no valid pixel"),
    ]
    for msg, size, reason in problems:
        with pytest.raises(DepthError, match=reason):
            decode_depth(msg, size)
    info = make_camera_info(typestore, make_header(typestore), 480, 640, fx=0.0)
    with pytest.raises(DepthError, match="focal length"):
        Intrinsics.from_camera_info(info, (480, 640))
    with pytest.raises(DepthError, match="640x480 images"):
        Intrinsics.from_camera_info(make_camera_info(typestore, make_header(typestore), 480, 640), (240, 320))
    k = Intrinsics.from_camera_info(make_camera_info(typestore, make_header(typestore), 480, 640, fx=525.0, fy=526.0), (480, 640))
    assert (k.fx, k.fy, k.cx, k.cy) == (525.0, 526.0, 320.0, 240.0)
