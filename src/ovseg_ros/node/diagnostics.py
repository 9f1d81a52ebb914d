"""What /diagnostics reports: rates, per-stage latency, drops (ROS-free)."""

from __future__ import annotations

from ovseg_ros.node.frames import LatestFrameSlots
from ovseg_ros.node.pipeline import DEPTH_STAGE, STAGES, PipelineStats

OK, WARN, ERROR = 0, 1, 2


class RateMeter:
    """Messages per second over the period between two reports."""

    def __init__(self) -> None:
        self._last_counts: dict[str, int] = {}
        self._last_time: float | None = None

    def rates(self, counts: dict[str, int], now: float) -> dict[str, float]:
        elapsed = (now - self._last_time) if self._last_time is not None else 0.0
        rates = {
            key: (count - self._last_counts.get(key, 0)) / elapsed if elapsed > 0 else 0.0 for key, count in counts.items()
        }
        self._last_counts, self._last_time = dict(counts), now
        return rates


def summarize(
    cameras: list[str],
    slots: LatestFrameSlots,
    stats: PipelineStats,
    input_rates: dict[str, float],
    output_rates: dict[str, float],
    vocabulary_version: int,
) -> tuple[int, str, dict[str, str]]:
    """(level, message, key/values) for one DiagnosticStatus."""
    values: dict[str, str] = {"vocabulary_version": str(vocabulary_version)}
    for stage in STAGES + ((DEPTH_STAGE,) if stats.latency.get(DEPTH_STAGE) else ()):
        median = stats.median_ms(stage)
        values[f"latency_{stage}_ms"] = f"{median:.1f}" if median is not None else "n/a"
    level, problems = OK, []
    for camera in cameras:
        values[f"{camera}/input_hz"] = f"{input_rates.get(camera, 0.0):.2f}"
        values[f"{camera}/output_hz"] = f"{output_rates.get(camera, 0.0):.2f}"
        values[f"{camera}/received"] = str(slots.received[camera])
        values[f"{camera}/processed"] = str(stats.processed[camera])
        values[f"{camera}/dropped_stale"] = str(slots.replaced[camera] + slots.expired[camera])
        values[f"{camera}/dropped_bad_input"] = str(stats.bad_input[camera])
        values[f"{camera}/failed"] = str(stats.failed[camera])
        values[f"{camera}/overlays_rendered"] = str(stats.overlays[camera])
        if stats.in_3d[camera] or stats.without_3d[camera]:
            values[f"{camera}/frames_in_3d"] = str(stats.in_3d[camera])
            values[f"{camera}/frames_without_3d"] = str(stats.without_3d[camera])
        if stats.failed[camera]:
            level = max(level, ERROR)
            problems.append(f"{camera}: inference failures")
        if stats.bad_input[camera]:
            level = max(level, WARN)
            problems.append(f"{camera}: bad input frames")
        if stats.without_3d[camera]:
            level = max(level, WARN)
            problems.append(f"{camera}: frames without usable depth")
        if slots.received[camera] == 0:
            level = max(level, WARN)
            problems.append(f"{camera}: no frames received")
    message = "; ".join(problems) if problems else "running"
    return level, message, values
