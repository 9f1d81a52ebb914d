"""The 3D step (segments in 3D from aligned depth) at 640x480 with 20 segments: our
measurer (segments_3d; it builds its compiled loops in the warm-up call) beside the
per-segment loop a node usually runs, in one run, and the labelled point cloud at two
decimations.

    python benchmarks/bench_depth.py [--repeats 50] [--size 480x640] [--segments 20] [--json out.json]

Prints a table and writes JSON. The steps run interleaved, one call each in turn, as in
a node where other work runs between frames and the caches are cold; ours also runs back
to back (warm caches), the best case. The scene: a floor and wall plane behind plates at
1.5-4 m, with 2 mm noise, 5% invalid pixels and flying pixels at depth edges. The
baseline (ovseg_ros.naive.loop_segment_boxes) erodes each mask and takes percentiles:
it does far less than ours (no search for each segment's own surface), so the ratio
understates the gain for the same work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from ovseg_ros.benchmark import machine_info
from ovseg_ros.depth import Intrinsics, point_cloud
from ovseg_ros.naive import loop_segment_boxes
from ovseg_ros.segments_3d import SegmentMeasurer


def scene(height: int, width: int, segments: int, seed: int = 0):
    """(panoptic ids 1..segments, depth metres with NaN holes, semantic, rgb, intrinsics)."""
    rng = np.random.default_rng(seed)
    k = Intrinsics(fx=525.0 * width / 640, fy=525.0 * width / 640, cx=(width - 1) / 2, cy=(height - 1) / 2)
    vs, us = np.mgrid[0:height, 0:width]
    depth = np.where(vs > height / 2, k.fy * 1.0 / np.maximum(vs - k.cy, 1), 6.0).astype(np.float32)  # floor, wall at 6 m
    panoptic = np.full((height, width), segments, np.int32)  # the background is the last segment
    columns, rows = 5, -(-(segments - 1) // 5)
    for i in range(segments - 1):  # plates on a grid, jittered
        r, c = divmod(i, columns)
        top = int((r + rng.uniform(0.1, 0.3)) * height / rows)
        left = int((c + rng.uniform(0.1, 0.3)) * width / columns)
        bottom, right = top + int(rng.uniform(0.5, 0.7) * height / rows), left + int(rng.uniform(0.5, 0.7) * width / columns)
        panoptic[top:bottom, left:right] = i + 1
        depth[top:bottom, left:right] = rng.uniform(1.5, 4.0)
    edge = np.zeros_like(depth, bool)
    edge[:, 1:] = np.abs(np.diff(depth, axis=1)) > 0.1
    mix = rng.uniform(0.2, 0.8, depth.shape).astype(np.float32)
    depth = np.where(edge, mix * depth + (1 - mix) * np.roll(depth, 1, axis=1), depth)
    depth += rng.normal(0, 0.002, depth.shape).astype(np.float32)
    depth[rng.random(depth.shape) < 0.05] = np.nan
    semantic = (panoptic - 1) % 7
    rgb = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    return panoptic, depth.astype(np.float32), semantic, rgb, k


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up (and the measurer's buffers)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--size", default="480x640", help="HEIGHTxWIDTH")
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))
    panoptic, depth, semantic, rgb, k = scene(height, width, args.segments)
    measurer = SegmentMeasurer()
    n, r = args.segments, args.repeats
    runs = {  # interleaved below, so drift on a noisy machine hits both sides alike
        "3D boxes, ours": lambda: measurer(panoptic, depth, k, n),
        "3D boxes, per-segment loop": lambda: loop_segment_boxes(panoptic, depth, k, n),
        "point cloud, every pixel": lambda: point_cloud(panoptic, semantic, rgb, depth, k, 1).tobytes(),
        "point cloud, decimation 2": lambda: point_cloud(panoptic, semantic, rgb, depth, k, 2).tobytes(),
    }
    times = {name: [] for name in runs}
    for fn in runs.values():
        fn()
    for _ in range(r):
        for name, fn in runs.items():
            times[name] += timed(fn, 1)
    times["3D boxes, ours back to back"] = timed(runs["3D boxes, ours"], r)  # caches warm, as in a tight loop
    rows = [{"step": name, "median_ms": 1e3 * statistics.median(t), "p90_ms": 1e3 * float(np.percentile(t, 90))}
            for name, t in times.items()]
    ratio = rows[1]["median_ms"] / rows[0]["median_ms"]
    clouds = {name: len(runs[name].__call__()) // 24 for name in list(runs)[2:]}
    machine = {**machine_info("cpu"), "input": f"{height}x{width}", "segments": n, "repeats": r}
    print(f"machine: {machine}")
    print(f"{'step':32s} {'median ms':>10s} {'p90 ms':>8s}")
    for row in rows:
        print(f"{row['step']:32s} {row['median_ms']:10.2f} {row['p90_ms']:8.2f}")
    print(f"per-segment loop / ours (both interleaved with the other steps): {ratio:.1f}x; target for ours: under 5 ms")
    print(f"cloud points: {clouds}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "rows": rows, "loop_over_ours": ratio, "cloud_points": clouds}, f, indent=1)


if __name__ == "__main__":
    main()
