"""Helpers shared by test modules (conftest.py holds the fixtures)."""

from __future__ import annotations


def make_header(typestore, sec: int = 12, nanosec: int = 345, frame_id: str = "camera_optical"):
    Time = typestore.types["builtin_interfaces/msg/Time"]
    Header = typestore.types["std_msgs/msg/Header"]
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)
