"""Helpers shared by test modules (conftest.py holds the fixtures)."""

from __future__ import annotations


def make_header(typestore, sec: int = 12, nanosec: int = 345, frame_id: str = "camera_optical"):
    Time = typestore.types["builtin_interfaces/msg/Time"]
    Header = typestore.types["std_msgs/msg/Header"]
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def make_camera_info(typestore, header, height: int, width: int, fx: float = 500.0, fy: float = 500.0):
    import numpy as np

    types = typestore.types
    roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    k = np.array([fx, 0, width / 2, 0, fy, height / 2, 0, 0, 1], dtype=np.float64)
    p = np.array([fx, 0, width / 2, 0, 0, fy, height / 2, 0, 0, 0, 1, 0], dtype=np.float64)
    return types["sensor_msgs/msg/CameraInfo"](
        header=header, height=height, width=width, distortion_model="plumb_bob", d=np.zeros(5), k=k,
        r=np.eye(3).reshape(-1), p=p, binning_x=0, binning_y=0, roi=roi,
    )
