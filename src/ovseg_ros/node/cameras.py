"""Camera names and input topic names: short, unique names from image topics (output
topics are ~/<camera>/...), and the relative input names users remap."""

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


def input_names(cameras: Sequence[str], stream: str) -> dict[str, str]:
    """Relative input topic per camera, to be remapped as image_pipeline nodes are:
    one camera reads `image`, `camera_info`; several read `<camera>/image`, ...."""
    if len(cameras) == 1:
        return {cameras[0]: stream}
    return {camera: f"{camera}/{stream}" for camera in cameras}


def sibling_topic(image_topic: str, name: str) -> str:
    """The topic beside an image topic, as image_transport pairs them:
    ('/front/image_raw', 'camera_info') -> '/front/camera_info'."""
    parent = image_topic.rstrip("/").rsplit("/", 1)[0]
    return f"{parent}/{name}"
