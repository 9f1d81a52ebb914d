"""Training and evaluation of EOV-Seg for ovseg_ros (kept apart from the inference package)."""
