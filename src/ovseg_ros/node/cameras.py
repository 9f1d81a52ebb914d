"""Short, unique camera names from image topics, used in output topic names."""

from __future__ import annotations

import re
from typing import Sequence

_IMAGE_SUFFIXES = ("image_raw", "image_rect_color", "image_rect", "image_color", "image_mono", "image", "compressed")


def camera_names(topics: Sequence[str]) -> list[str]:
    """'/front/image_raw' -> 'front', '/robot/left/image_rect' -> 'robot/left',
    '/image_raw' -> 'camera'. Clashes get a numeric suffix."""
    names: list[str] = []
    for topic in topics:
        parts = [p for p in topic.strip("/").split("/") if p]
        while parts and parts[-1] in _IMAGE_SUFFIXES:
            parts.pop()
        name = "/".join(re.sub(r"[^A-Za-z0-9_]", "_", p) for p in parts) or "camera"
        if name[0].isdigit():
            name = "camera_" + name
        candidate, n = name, 2
        while candidate in names:
            candidate, n = f"{name}_{n}", n + 1
        names.append(candidate)
    return names
