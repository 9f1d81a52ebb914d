# Source me (bash), from the repository root, after tools/setup_env.sh:
#   . tools/ros_env.sh
# Makes ROS 2 available to the tests and builds ros2_ws (ovseg_msgs + ovseg_ros):
# - a ROS 2 already sourced (e.g. /opt/ros/humble/setup.bash on a robot) is kept;
# - otherwise ../shared/ros2/env.sh builds ROS 2 Humble from source once per machine
#   (10-20 minutes the first time) and sources it.
# Without ROS, it says so and returns 1; tools/test.sh then runs the tests without it
# (the ROS tests skip with the reason) unless CI=true, where that is a failure.

_ovseg_ros_env() {
  local repo shared from_shared=0
  repo=$(pwd)
  shared=$(cd "$repo/.." && pwd)/shared/ros2
  if [ -z "${ROS_DISTRO:-}" ] || ! python3 -c "import rclpy" 2>/dev/null; then
    if [ ! -f "$shared/env.sh" ]; then
      echo "[ros] no ROS 2 sourced and no $shared/env.sh: ROS tests will not run" >&2
      return 1
    fi
    # build.sh asks colcon for the `status` event handler, which comes with
    # colcon-notification (not in its own package list): install it first when missing.
    if ! dpkg-query -W -f='${Status}' python3-colcon-notification 2>/dev/null | grep -q "ok installed"; then
      echo "[ros] installing python3-colcon-notification (needed by ../shared/ros2/build.sh)" >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-colcon-notification >&2 \
        || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-colcon-notification >&2; } \
        || return 1
    fi
    echo "[ros] sourcing ROS 2 Humble from ../shared/ros2 (built on first use: 10-20 minutes)" >&2
    # shellcheck disable=SC1090,SC1091
    . "$shared/env.sh" || return 1
    from_shared=1
  fi
  # launch's frontend parser needs lark, the ros2 tools PyYAML: the venv runs the tests
  if ! .venv/bin/python -c "import lark, yaml" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet lark PyYAML || return 1
  fi
  echo "[ros] building ros2_ws (colcon build --symlink-install)" >&2
  local cmake_python=() path=$PATH
  if [ "$from_shared" = 1 ]; then
    # ../shared/ros2 is built for Debian's /usr/bin/python3; pyenv shims on PATH would
    # be picked by CMake instead (see ../shared/ros2/README.md)
    path=/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/bin
    cmake_python=(--cmake-args -DPython3_EXECUTABLE=/usr/bin/python3 -DPYTHON_EXECUTABLE=/usr/bin/python3)
  fi
  (cd "$repo/ros2_ws" && PATH=$path colcon build --symlink-install --event-handlers console_cohesion- \
      "${cmake_python[@]}" > "$repo/ros2_ws/colcon_build.log" 2>&1) \
    || { tail -n 40 "$repo/ros2_ws/colcon_build.log" >&2; echo "[ros] colcon build failed (log: ros2_ws/colcon_build.log)" >&2; return 1; }
  local opts=$-
  set +u
  # shellcheck disable=SC1091
  . "$repo/ros2_ws/install/setup.bash"
  case $opts in *u*) set -u ;; esac
  # The node's executable starts with `#!/usr/bin/env python3`: the venv's Python (with
  # torch) must come first on PATH for launch to run it.
  export PATH="$repo/.venv/bin:$PATH"
  return 0
}
_ovseg_ros_env
