"""Accuracy of the 3D step on the tests' harder scenes (tests/depth_scenes.py): per scene
and mask error, per distance band and mask error, the share of objects whose box is
within the claim, and the p90 / worst errors.

    python benchmarks/accuracy_3d.py [--scenes 15] [--decimation 1] [--json out.json]

The claim: centre within max(2 cm, 1% of z) and each size within max(3 cm, 2% of z) of
the visible surface's (where the camera has depth), along the optical axis plus 3 sigma
of the noise at that depth. Prints the tables; the tests assert on the same numbers.
`--decimation D` measures on every D-th pixel each way instead (intrinsics scaled, the
mask margin and the interior's sample scaled with them): D^2 times fewer pixels (at D=2
the step took 0.38 of the full one's time side by side: fixed costs stay), and this shows
what that costs in accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from depth_scenes import MASK_ERRORS, evaluate, format_tables, tables
from ovseg_ros.depth import Intrinsics
from ovseg_ros.segments_3d import SegmentMeasurer


def decimated(decimation: int):
    """measure(panoptic, depth, intrinsics, n) on every `decimation`-th pixel each way: pixel
    (i, j) of the decimated images is (d i, d j) of the full ones, so the focal lengths and
    the principal point divide by d; the default measurer's margin and interior stride,
    in full-resolution pixels, scale with them."""
    default = SegmentMeasurer()
    measurer = SegmentMeasurer(mask_margin=-(-default.mask_margin // decimation), stride=max(1, default.stride // decimation))
    if decimation == 1:
        return measurer

    def measure(panoptic, depth, k, n):
        k = Intrinsics(fx=k.fx / decimation, fy=k.fy / decimation, cx=k.cx / decimation, cy=k.cy / decimation)
        return measurer(panoptic[::decimation, ::decimation], depth[::decimation, ::decimation], k, n)
    return measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=15)
    parser.add_argument("--decimation", type=int, default=1, help="measure on every D-th pixel each way")
    parser.add_argument("--json", help="also write the tables here")
    args = parser.parse_args()
    if args.decimation < 1:
        parser.error("--decimation must be at least 1")
    cases = evaluate(decimated(args.decimation), range(args.scenes))
    result = tables(cases)
    print(format_tables(result))
    wide = [c.within for c in cases if c.mask_error in MASK_ERRORS[:4]]
    print(f"\nmasks up to 3 px too wide: {sum(wide)}/{len(wide)} = {np.mean(wide):.1%} within the claim")
    if args.json:
        serial = {**result, "by_scene": {str(k): {e: [sum(v), len(v)] for e, v in row.items()} for k, row in result["by_scene"].items()},
                  "by_band": {k: {e: [sum(v), len(v)] for e, v in row.items()} for k, row in result["by_band"].items()}}
        with open(args.json, "w") as f:
            json.dump(serial, f, indent=1)


if __name__ == "__main__":
    main()
