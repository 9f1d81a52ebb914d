"""Finding message definitions for ROS-free use (offline bags, tests) with `rosbags`.

Our own definitions come from the ovseg_msgs package: an installed ROS workspace
(AMENT_PREFIX_PATH), the pip install's share/ folder, or the source tree. vision_msgs
is not part of rosbags' stores; its definitions are taken from an installed ROS, a
folder given by the caller, or $OVSEG_VISION_MSGS_DIR.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SOURCE_MSG_DIR = Path(__file__).resolve().parents[2] / "msg"


def _candidates(package: str) -> list[Path]:
    paths = [Path(p) / "share" / package for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    paths.append(Path(sys.prefix) / "share" / package)
    return paths


def find_interface_dir(package: str, explicit: str | Path | None = None) -> Path | None:
    """Folder holding `msg/*.msg` of `package`, or None."""
    env = os.environ.get(f"OVSEG_{package.upper()}_DIR")
    candidates = [Path(explicit)] if explicit else []
    candidates += [Path(env)] if env else []
    candidates += _candidates(package)
    if package == "ovseg_msgs":
        candidates.append(SOURCE_MSG_DIR)
    for folder in candidates:
        if (folder / "msg").is_dir() and any((folder / "msg").glob("*.msg")):
            return folder
    return None


def message_definitions(package: str, folder: Path) -> dict[str, str]:
    """{"pkg/msg/Name": definition text} for every .msg file of a package folder."""
    return {f"{package}/msg/{path.stem}": path.read_text() for path in sorted((folder / "msg").glob("*.msg"))}


def rosbags_typestore(vision_msgs_dir: str | Path | None = None):
    """A rosbags typestore (ROS 2 Humble) with ovseg_msgs and, when found, vision_msgs.

    Returns (typestore, has_vision_msgs).
    """
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    ours = find_interface_dir("ovseg_msgs")
    if ours is None:
        raise FileNotFoundError("ovseg_msgs definitions not found (install the package or run from the source tree)")
    vision = find_interface_dir("vision_msgs", vision_msgs_dir)
    folders = [("ovseg_msgs", ours)] + ([("vision_msgs", vision)] if vision else [])
    types = {}
    for package, folder in folders:
        for name, text in message_definitions(package, folder).items():
            types.update(get_types_from_msg(text, name))
    typestore.register(types)
    return typestore, vision is not None
