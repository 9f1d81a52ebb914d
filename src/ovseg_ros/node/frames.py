"""The newest frame per camera, handed to one worker. Callbacks never block: a frame
that arrives while an older one still waits replaces it, and the old one is counted as
dropped. Nothing queues up behind a slow model."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

BYTES_PER_PIXEL_MAX = 8  # rgba16: the widest encoding decode takes


@dataclass(frozen=True)
class Frame:
    camera: str
    message: Any
    received: float  # time.monotonic() at arrival


class LatestFrameSlots:
    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._slots: dict[str, Frame] = {}
        self._ready = threading.Condition()
        self._closed = False
        self.received: Counter[str] = Counter()
        self.replaced: Counter[str] = Counter()  # overwritten before the worker took them
        self.expired: Counter[str] = Counter()  # older than max_age when their turn came

    def put(self, camera: str, message: Any) -> None:
        with self._ready:
            self.received[camera] += 1
            if camera in self._slots:
                self.replaced[camera] += 1
            self._slots[camera] = Frame(camera, message, self._clock())
            self._ready.notify()

    def take(self, timeout: float | None = None, max_frames: int | None = None, max_age: float = 0.0) -> list[Frame]:
        """Wait for frames; return the newest frame of up to `max_frames` cameras (oldest
        first) and clear their slots. Empty on timeout or after close()."""
        with self._ready:
            if not self._slots and not self._closed:
                self._ready.wait(timeout)
            if self._closed:
                return []
            frames = sorted(self._slots.values(), key=lambda f: f.received)[: max_frames or None]
            for frame in frames:
                del self._slots[frame.camera]
        if max_age > 0:
            now = self._clock()
            fresh = [f for f in frames if now - f.received <= max_age]
            for f in frames:
                if now - f.received > max_age:
                    self.expired[f.camera] += 1
            frames = fresh
        return frames

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()


def oversize(message: Any, max_pixels: int) -> str | None:
    """Why a camera or depth message is refused for its size, or None: read from its
    header fields and data length only, before anything is allocated for its pixels, so
    a 20000 x 20000 frame costs no more than the transport's own copy of it."""
    height, width = getattr(message, "height", None), getattr(message, "width", None)
    try:
        size = len(message.data)
    except (AttributeError, TypeError):
        return None  # not a message decode can read: decode says why
    if height is None or width is None:  # CompressedImage: no header size; compressed data is smaller than raw
        if size > 3 * max_pixels:
            return f"compressed image of {size} bytes exceeds max_image_pixels ({max_pixels} pixels, {3 * max_pixels} bytes)"
        return None
    try:
        pixels = int(height) * int(width)
    except (TypeError, ValueError):
        return None
    if pixels > max_pixels:
        return f"image of {width}x{height} ({pixels} pixels) exceeds max_image_pixels ({max_pixels})"
    if size > BYTES_PER_PIXEL_MAX * max(pixels, 1) + 4096:
        return f"image data of {size} bytes is far more than {width}x{height} pixels need (max_image_pixels {max_pixels})"
    return None
