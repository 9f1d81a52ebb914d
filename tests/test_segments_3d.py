"""The 3D step on scenes closer to a depth camera on a robot (tests/depth_scenes.py):
tilted cameras, occlusion, boxes, spheres, cylinders and thin poles at 0.6-6 m, noise
growing with distance, quantisation, clumped holes, flying pixels, masks 0-3 px too
wide, eroded, blocky or bleeding onto the object behind, objects cut by the border.
The printed tables (pytest -s, or benchmarks/accuracy_3d.py) are the README's."""

from __future__ import annotations

import numpy as np
import pytest

from depth_scenes import (
    HEIGHT,
    WIDTH,
    K,
    Shape,
    degrade,
    evaluate,
    format_tables,
    render,
    segmenter_masks,
    tables,
    tolerances,
    visible_truth,
)
from ovseg_ros.segments_3d import SegmentMeasurer

WIDE = ("exact", "wide1", "wide2", "wide3")  # masks up to 3 px too wide: the claim's regime
# The target: 95% of objects within the claim with masks up to 3 px too wide.
WIDE_FLOOR = 0.95
OTHER_FLOOR = {"blocky": 0.92, "bleed_behind": 0.92, "eroded2": 0.5}


@pytest.fixture(scope="module")
def cases():
    return evaluate(SegmentMeasurer())


def test_claim_for_masks_up_to_three_pixels_too_wide(cases):
    print("\n" + format_tables(tables(cases)))
    wide = [c for c in cases if c.mask_error in WIDE]
    share = np.mean([c.within for c in wide])
    assert len(wide) > 400 and share >= WIDE_FLOOR, share
    for error in WIDE:  # and in each case on its own
        assert np.mean([c.within for c in wide if c.mask_error == error]) >= WIDE_FLOOR - 0.01, error


def test_other_mask_errors_and_how_far_misses_go(cases):
    for error, floor in OTHER_FLOOR.items():
        assert np.mean([c.within for c in cases if c.mask_error == error]) >= floor, error
    wide = [c for c in cases if c.mask_error in WIDE]
    ratios = np.array([c.ratio for c in wide])
    assert np.percentile(ratios, 97) < 2.0 and ratios.max() < 15.0  # misses stay near the claim: no metre-sized boxes


def _one_object_scene(shapes, camera_height=1.2, tilt=25.0, back_wall=7.0):
    return render([shapes], camera_height, tilt, back_wall=back_wall, side_wall=3.5)


def _errors(scene, panoptic, depth, measurer=None):
    geometry = (measurer or SegmentMeasurer())(panoptic, depth, K, scene.num_objects + 2)
    centre, size, _ = visible_truth(scene, depth)
    return np.abs(geometry.center[0] - centre[0]), np.abs(geometry.size[0] - size[0])


@pytest.mark.parametrize("shapes", [
    [Shape("cylinder", np.array([0.2, 0.0, 3.0]), np.array([0.15, 0.8]))],  # curved: its rim recedes steeply
    [Shape("box", np.array([-0.3, 0.0, 2.5]), np.array([0.5, 0.6, 0.5]), 1.35)],  # a face seen nearly edge-on
    [Shape("box", np.array([0.0, 0.0, 3.0]), np.array([0.4, 0.3, 0.4]), 0.3),
     Shape("cylinder", np.array([0.0, 0.3, 3.0]), np.array([0.012, 0.8]))],  # a pole 3 px wide on a crate
], ids=["cylinder", "grazing face", "thin pole"])
def test_surfaces_are_kept_whole_on_clean_depth(shapes):
    """Curved and grazing surfaces and thin parts of the object are kept on perfect data
    with exact masks, within the claim (the issue saw -7.7 cm, -21 cm, -23 cm)."""
    scene = _one_object_scene(shapes)
    depth = np.where(scene.grazing, np.nan, scene.depth).astype(np.float32)
    centre_error, size_error = _errors(scene, segmenter_masks(scene, "exact"), depth)
    centre_tolerance, size_tolerance = tolerances(np.array([shapes[0].center[2]]))
    assert (centre_error <= centre_tolerance[0]).all() and (size_error <= size_tolerance[0]).all(), (centre_error, size_error)


def test_wide_masks_and_flying_pixels_at_the_image_border():
    """An object the border cuts, with a mask 3 px too wide over the wall beside it and
    flying pixels at its edges: the box is its own surface's (the issue saw 0.2-0.7 m)."""
    shapes = [Shape("box", np.array([1.55, 0.0, 2.4]), np.array([0.6, 0.9, 0.5]), 0.2)]
    scene = _one_object_scene(shapes)
    assert (scene.labels[:, -1] == 1).any()  # cut by the right border
    for seed in range(3):
        depth = degrade(scene, np.random.default_rng(seed))
        centre_error, size_error = _errors(scene, segmenter_masks(scene, "wide3"), depth)
        assert centre_error.max() <= 0.03 and size_error.max() <= 0.06, (seed, centre_error, size_error)


def test_every_segment_measured_in_one_pass_and_nothing_for_absent_ids():
    scene = _one_object_scene([Shape("sphere", np.array([0.0, 0.0, 2.0]), np.array([0.2]))])
    depth = degrade(scene, np.random.default_rng(0))
    geometry = SegmentMeasurer()(scene.labels, depth, K, scene.num_objects + 4)  # two ids more than the scene has
    assert geometry.center.shape == (5, 3) and np.isnan(geometry.center[3:]).all() and (geometry.points[3:] == 0).all()
    assert geometry.points[0] > 1000 and np.isfinite(geometry.size[:3]).all()
    assert scene.labels.shape == (HEIGHT, WIDTH)
