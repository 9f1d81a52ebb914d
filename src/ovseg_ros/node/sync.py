"""Side inputs matched to image frames by stamp (ROS-free).

A camera's camera_info (and depth image) arrive on their own topics. Each is kept in a
short buffer; when a frame is processed, the entry whose stamp is nearest to the
image's, within `slop` seconds, goes with it (approximate-time matching, done when the
frame is taken rather than when it arrives, so an image never waits for a missing
partner and is never dropped for lack of one).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any


def stamp_seconds(header) -> float:
    return float(header.stamp.sec) + 1e-9 * float(header.stamp.nanosec)


class StampBuffer:
    """The last `size` messages of one topic, looked up by header stamp."""

    def __init__(self, size: int = 10) -> None:
        self._items: deque[tuple[float, Any]] = deque(maxlen=size)
        self._lock = threading.Lock()

    def put(self, message: Any) -> None:
        with self._lock:
            self._items.append((stamp_seconds(message.header), message))

    def nearest(self, stamp: float, slop: float) -> Any | None:
        """The message whose stamp is closest to `stamp`, if within `slop` seconds."""
        with self._lock:
            items = list(self._items)
        if not items:
            return None
        delta, message = min(((abs(t - stamp), m) for t, m in items), key=lambda pair: pair[0])
        return message if delta <= slop else None


class SideInputs:
    """Per camera: buffers of camera_info and, with `depth`, depth image messages."""

    def __init__(self, cameras, slop: float, size: int = 10, depth: bool = False) -> None:
        self.slop = slop
        self.camera_info = {camera: StampBuffer(size) for camera in cameras}
        self.depth = {camera: StampBuffer(size) for camera in cameras} if depth else {}

    def camera_info_for(self, camera: str, header) -> Any | None:
        buffer = self.camera_info.get(camera)
        return buffer.nearest(stamp_seconds(header), self.slop) if buffer is not None else None

    def depth_for(self, camera: str, header) -> Any | None:
        buffer = self.depth.get(camera)
        return buffer.nearest(stamp_seconds(header), self.slop) if buffer is not None else None
