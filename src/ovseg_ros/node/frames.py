"""The newest frame per camera, handed to one worker. Callbacks never block: a frame
that arrives while an older one still waits replaces it, and the old one is counted as
dropped. Nothing queues up behind a slow model."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any


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
