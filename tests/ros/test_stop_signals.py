"""How a robot's supervisor stops the node: SIGTERM (systemd, docker stop, `timeout`) to
the node process ends it like Ctrl-C does, releasing the model and exiting 0, with no
traceback (rclpy's own handler shut the context down under the executor: that was a
traceback and exit code 1)."""

from __future__ import annotations

import os
import signal

import pytest
from ros_graph import require_ros

require_ros()

from ros_graph import launched_node, wait_until  # noqa: E402

pytestmark = pytest.mark.timeout(600)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_stop_signal_to_the_node_ends_it_cleanly(tmp_path, stop):
    with launched_node(tmp_path, ["min_size: 0", "device: cpu"], ["camera_topics:=/stop/image_raw"]) as launch:
        pid = launch.node_pid()
        assert pid is not None, launch.output[-2000:]
        os.kill(pid, stop)
        assert wait_until(lambda: "process has finished cleanly" in launch.output or "process has died" in launch.output, 60), \
            launch.output[-3000:]
        log = launch.output
        assert "process has finished cleanly" in log and "Traceback" not in log, log[-3000:]
