"""The tracker on synthetic sequences (tests/tracking_scenes.py, seeds 1000+: neither the
tests' nor those the tracker was tuned on): HOTA, MOTA, IDF1 and ID switches per track
(TrackEval), with and without the segmenter's noise and with long occlusions, without
embeddings, and for ids from the truth on every segment (what a tracker that never errs
scores: IDF1's ceiling left by missed and split masks; its MOTA and HOTA count split pieces
that the tracker leaves unnamed); and the tracker's cost per frame with 50 segments at
640x480 (median). Prints a table and JSON.

    .venv/bin/python benchmarks/bench_tracking.py --json bench_tracking.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ovseg_ros.predictor import Prediction, Segment
from ovseg_ros.tracking import SegmentTracker
from tracking_scenes import make_sequence, oracle, score, track

NOISY = {"noise": True, "max_hidden": 1.0}
CASES = {  # name -> (make_sequence options, how the ids are made)
    "clean, hidden <= 1 s": ({"noise": False, "max_hidden": 1.0}, "tracker"),
    "noisy masks, misses, flips, drops; hidden <= 1 s": (NOISY, "tracker"),
    "noisy; hidden up to 2.5 s": ({"noise": True, "max_hidden": 2.5}, "tracker"),
    "noisy, hidden <= 1 s; no embeddings (motion, masks)": (NOISY, "no embeddings"),
    "noisy, hidden <= 1 s; oracle ids on every segment": (NOISY, "oracle"),
}


def ids_for(sequence, how: str):
    if how == "oracle":
        return oracle(sequence)
    return track(sequence, SegmentTracker(), with_embeddings=how == "tracker")


def cost_per_frame(segments: int = 50, frames: int = 200) -> float:
    """Median ms of update() with `segments` thing segments moving on a 640x480 image."""
    rng = np.random.default_rng(7)
    height, width = 480, 640
    position = rng.uniform(0, [width - 40, height - 40], (segments, 2))
    velocity = rng.uniform(-3, 3, (segments, 2))
    tracker, times = SegmentTracker(), []
    for frame in range(frames):
        position = np.clip(position + velocity, 0, [width - 40, height - 40])
        panoptic = np.zeros((height, width), np.int32)
        items = []
        for i, (x, y) in enumerate(position.astype(int), 1):
            panoptic[y: y + 40, x: x + 40] = i
        for i, (x, y) in enumerate(position.astype(int), 1):
            area = int((panoptic == i).sum()) if frame == 0 else 1600
            items.append(Segment(i, 0, "box", True, 0.9, area, (int(x), int(y), 40, 40), (x + 20.0, y + 20.0)))
        prediction = Prediction(panoptic, panoptic, items, vocabulary_version=1)
        start = time.perf_counter()
        tracker.update(prediction, frame / 30)
        times.append(time.perf_counter() - start)
    return float(np.median(times[10:]) * 1e3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {}
    for name, (options, how) in CASES.items():
        rows = []
        for seed in range(1000, 1000 + args.seeds):
            sequence = make_sequence(seed, **options)
            rows.append(score(sequence, ids_for(sequence, how)))
        results[name] = {
            "HOTA": round(float(np.mean([r["HOTA"] for r in rows])), 3),
            "MOTA": round(float(np.mean([r["MOTA"] for r in rows])), 3),
            "IDF1": round(float(np.mean([r["IDF1"] for r in rows])), 3),
            "IDSW_per_track": round(float(sum(r["IDSW"] for r in rows) / sum(r["tracks"] for r in rows)), 2),
            "sequences": len(rows),
        }
    results["cost_ms_50_segments_640x480"] = round(cost_per_frame(), 2)
    print(f"{'case':<54} {'HOTA':>6} {'MOTA':>6} {'IDF1':>6} {'IDSW/track':>10}")
    for name in CASES:
        r = results[name]
        print(f"{name:<54} {r['HOTA']:>6.3f} {r['MOTA']:>6.3f} {r['IDF1']:>6.3f} {r['IDSW_per_track']:>10.2f}")
    print(f"tracker cost per frame, 50 segments, 640x480: {results['cost_ms_50_segments_640x480']} ms (median)")
    print(json.dumps(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
