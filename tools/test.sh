#!/usr/bin/env bash
# The project's test command (README, .ci/run): set up .venv, make ROS 2 available and
# build ros2_ws (tools/ros_env.sh), run pytest. Long runs are marked `slow` and left out
# unless asked for (`bash tools/test.sh -m slow`, as .ci/run does in a step of its own).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
if ! . tools/ros_env.sh; then
  if [ "${CI:-}" = "true" ]; then
    echo "error: CI must run the ROS tests, but ROS 2 could not be set up (see above)" >&2
    exit 1
  fi
  echo "warning: running without ROS 2: the tests in tests/ros will skip" >&2
fi
exec .venv/bin/python -m pytest tests training/tests -m "not slow" "$@"
