"""ovseg_ros: open-vocabulary panoptic segmentation (EOV-Seg) for robots.

The core (this package minus `ovseg_ros.node`) needs neither ROS nor TensorRT.
"""

__version__ = "0.1.0"
