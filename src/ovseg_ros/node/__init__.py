"""The ROS 2 node. Everything here but `ros_node.py` is ROS-free and tested directly;
`ros_node.py` is the thin rclpy shell."""
