"""Every command of README.md and training/README.md, run as written, in a folder laid out
like the repository root (the checkpoint `eov_seg_r50.pth` there holds stand-in weights,
`photos/`, `img.jpg` and `recording/` are small samples). Each command has an expected
exit code and output below; a command that cannot run on these machines is listed with
the reason. A README command this file does not know fails the test, so the READMEs and
this list stay in step.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Expect:
    pattern: str  # regex matched against the command line
    code: int | None = 0  # expected exit code; None: non-zero
    output: str = ""  # regex the output must contain
    files: tuple[str, ...] = ()  # paths (globs) that must exist afterwards
    not_run: str = ""  # why this command is not run here
    timeout: float = 900


def _ros_available() -> bool:
    return shutil.which("ros2") is not None and os.environ.get("AMENT_PREFIX_PATH", "") != ""


EXPECTATIONS = (
    Expect(r"^bash tools/demo\.sh$", output=r"street\.jpg: \d+ segments?: ", files=("demo_out/street_overlay.jpg", "demo_out/panoptic.json")),
    Expect(r"^bash tools/demo\.sh --model fc_clip --variant R50$", output=r"street\.jpg: \d+ segments?", files=("demo_out/street.json",)),
    Expect(r"^bash tools/test\.sh", not_run="the test command itself (this test is part of it; CI runs it)"),
    Expect(r"^OVSEG_CHECKPOINT=/path/to/eov_seg_r50\.pth bash tools/demo\.sh", code=2, output="checkpoint not found: /path/to/eov_seg_r50.pth"),
    Expect(r"^source \.venv/bin/activate$", output=""),
    Expect(r"^ovseg segment photos/\*\.jpg --checkpoint eov_seg_r50\.pth", output=r"things \(inferred\): person, car",
           files=("results/a_overlay.jpg", "results/b.json", "results/panoptic.json")),
    Expect(r"^cd ros2_ws$", output=""),
    Expect(r"^rosdep install", not_run="no rosdep here: ROS 2 is built from source (../shared/ros2); tools/ros_env.sh builds ros2_ws"),
    Expect(r"^python3 -m pip install torch torchvision", not_run="installs into the system Python of a robot; here the venv has them"),
    Expect(r"^colcon build --symlink-install$", not_run="tools/ros_env.sh runs it (with ../shared/ros2's Python settings) for the ROS tests"),
    Expect(r"^source install/setup\.bash$", not_run="tools/ros_env.sh sources ros2_ws/install/setup.bash for the ROS tests"),
    Expect(r"^ros2 launch ovseg_ros ovseg\.launch\.py camera_topics:=/front/image_raw checkpoint:=/models/",
           not_run="needs a real checkpoint at /models; tests/ros launch the same file with weights:=random"),
    Expect(r"^ros2 launch ovseg_ros ovseg\.launch\.py camera_topics:=/camera/color/image_raw +depth_topics:=",
           not_run="needs a real checkpoint at /models; tests/ros/test_launch.py and test_depth_node.py launch with depth_topics "
                   "and weights:=random"),
    Expect(r"^ros2 run ovseg_ros ovseg_node --ros-args -p weights:=random", output="segmenting /front/image_raw \\(front\\)"),
    Expect(r"^ros2 launch ovseg_ros ovseg\.launch\.py params_file:=tensorrt\.yaml",
           not_run="needs TensorRT and a GPU (not installable here); the tensorrt backend's tests skip with that reason"),
    Expect(r"^\.venv/bin/ovseg bag recording/", output=r"2/2 frames segmented", files=("segmented/metadata.yaml",)),
    Expect(r"^ovseg export --checkpoint eov_seg_r50\.pth --size 480x640",
           output=r"wrote eovseg_r50_480x640.onnx(.|\n)*TensorRT 8\.6: imports as documented(.|\n)*fp16 layer set: \d+ nodes",
           files=("eovseg_r50_480x640.onnx",), timeout=1800),  # the fp16 search: 25 runs of about 10-20 s
    Expect(r"^ovseg segment img\.jpg --checkpoint eov_seg_r50\.pth --backend onnxruntime", output=r"img\.jpg: \d+ segment"),
    Expect(r"^ovseg build-engine", code=2, output="needs TensorRT's Python bindings"),
    Expect(r"^ovseg-synthetic datasets/synthetic --train 200 --val 40$", files=("datasets/synthetic/train.json",)),
    Expect(r"^ovseg-train --config training/configs/synthetic\.json$", files=("output/synthetic/model_0000300.pth",)),
    Expect(r"^ovseg-eval --checkpoint output/synthetic/model_0000300\.pth", output=r"\(percent\) +PQ +SQ +RQ"),
    Expect(r"^ovseg-train --config training/configs/coco_r50\.json", code=2, output="dataset annotations not found"),
    Expect(r"^ovseg-train --config training/configs/coco_r50_gkc\.json$", code=2, output="dataset annotations not found"),
    Expect(r"^torchrun --nproc-per-node 8 -m ovseg_training\.train", code=None, output="dataset annotations not found"),
    Expect(r"^torchrun --nnodes 2", not_run="needs a second machine at HOST:29500"),
    Expect(r"^ovseg-eval --checkpoint output/eovseg_r50/model_0200000\.pth", code=2, output="dataset annotations not found"),
    Expect(r"^ovseg-eval --annotations datasets/coco/annotations/panoptic_val2017\.json .*--predictions my_results\.json", code=2,
           output="dataset annotations not found"),
    Expect(r"^ovseg-prepare-ade20k datasets/ADEChallengeData2016 --split validation$", code=2, output="annotations_instance"),
    Expect(r"^ovseg-eval --config training/configs/eval_ade20k\.json --checkpoint eov_seg_r50\.pth$", code=2,
           output="dataset annotations not found"),
    Expect(r"^\.venv/bin/python benchmarks/bench_core\.py --json bench_core\.json$", output=r"vocabulary encode", files=("bench_core.json",)),
    Expect(r"^\.venv/bin/python benchmarks/bench_depth\.py --json bench_depth\.json$", output=r"per-segment loop / ours",
           files=("bench_depth.json",)),
    Expect(r"^\.venv/bin/python benchmarks/bench_fp16\.py --json bench_fp16\.json$", output=r"fp16 \(emulated\) against fp32",
           files=("bench_fp16.json",)),
    Expect(r"^ovseg check-gpu --json check_gpu\.json$", output=r"skipped: eov_seg S torch cuda fp32: no CUDA GPU",
           files=("check_gpu.json",), timeout=1800),
    Expect(r"^\. tools/ros_env\.sh && \.venv/bin/python benchmarks/soak_node\.py --minutes 30",
           not_run="a 30-minute soak of the live node; run by hand, its figures are in the README"),
    Expect(r"^\.venv/bin/python benchmarks/bench_tracking\.py --json bench_tracking\.json$", output=r"tracker cost per frame",
           files=("bench_tracking.json",)),
    Expect(r"^python:", output=""),  # the README's Python example (run with the sample image as img.jpg)
)


def readme_blocks(path: Path) -> list[list[str]]:
    """Per code block, its commands: ```bash lines (continuations joined, comments
    dropped); a ```python block is one 'python:' entry."""
    blocks = []
    for lang, body in re.findall(r"```(bash|python)\n(.*?)```", path.read_text(), flags=re.S):
        if lang == "python":
            blocks.append(["python:" + body])
            continue
        commands = []
        for line in re.sub(r"\\\n\s*", " ", body).splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
        blocks.append(commands)
    return blocks


def readme_commands(path: Path) -> list[str]:
    return [command for block in readme_blocks(path) for command in block]


def expectation(command: str) -> Expect:
    matches = [e for e in EXPECTATIONS if re.search(e.pattern, command)]
    assert len(matches) == 1, f"README command without exactly one expectation in {__file__}: {command!r} -> {matches}"
    return matches[0]


def test_every_readme_command_has_an_expectation():
    commands = readme_commands(REPO / "README.md") + readme_commands(REPO / "training" / "README.md")
    used = {expectation(c).pattern for c in commands}
    assert used == {e.pattern for e in EXPECTATIONS}, "expectations no README command uses"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, stand_in_checkpoint) -> Path:
    """A folder laid out like the repository root, with the README's sample inputs."""
    root = tmp_path_factory.mktemp("readme")
    for name in (".venv", "tools", "src", "training", "benchmarks", "msg", "ros2_ws", "launch", "config", "pyproject.toml"):
        (root / name).symlink_to(REPO / name)
    (root / "eov_seg_r50.pth").symlink_to(stand_in_checkpoint)
    assets = REPO / "src" / "ovseg_ros" / "assets"
    (root / "photos").mkdir()
    for name, asset in (("a", "street"), ("b", "warehouse")):
        image = cv2.imread(str(assets / f"{asset}.jpg"))
        cv2.imwrite(str(root / "photos" / f"{name}.jpg"), cv2.resize(image, (320, 240)))
    shutil.copy(root / "photos" / "a.jpg", root / "img.jpg")
    _write_recording(root / "recording")
    return root


def _write_recording(path: Path) -> None:
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    Image, Header, Time = (store.types[f"{p}/msg/{n}"] for p, n in (("sensor_msgs", "Image"), ("std_msgs", "Header"), ("builtin_interfaces", "Time")))
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    with Writer(path, version=8) as writer:
        connection = writer.add_connection("/front/image_raw", "sensor_msgs/msg/Image", typestore=store)
        for sec in (1, 2):
            msg = Image(header=Header(stamp=Time(sec=sec, nanosec=0), frame_id="front"), height=48, width=64, encoding="rgb8",
                        is_bigendian=0, step=64 * 3, data=rgb.reshape(-1))
            writer.write(connection, sec * 10**9, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))


def _environment(cwd: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}:{env['PATH']}"  # what `source .venv/bin/activate` does
    env["VIRTUAL_ENV"] = str(VENV_BIN.parent)
    env["OUT"] = str(cwd / "demo_out")  # tools/demo.sh's output folder
    return env


def _run(command: str, cwd: Path, timeout: float) -> tuple[int, str]:
    if command.startswith("python:"):
        process = subprocess.run([sys.executable, "-c", command[len("python:"):]], cwd=cwd, env=_environment(cwd),
                                 capture_output=True, text=True, timeout=timeout)
        return process.returncode, process.stdout + process.stderr
    if command.startswith("ros2 run "):
        return _run_node_until_ready(command, cwd)
    process = subprocess.run(["bash", "-c", command], cwd=cwd, env=_environment(cwd), capture_output=True, text=True, timeout=timeout)
    return process.returncode, process.stdout + process.stderr


def _run_node_until_ready(command: str, cwd: Path) -> tuple[int, str]:
    """A node runs until stopped: start it, wait until it segments, Ctrl-C; its exit code."""
    log = cwd / "ros2_run.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=_environment(cwd), stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None and "segmenting" not in log.read_text(errors="replace"):
            time.sleep(0.5)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        code = process.wait(60)
    return code, log.read_text(errors="replace")


@pytest.mark.slow
@pytest.mark.timeout(4200)
@pytest.mark.parametrize("readme", ["README.md", "training/README.md"])
def test_readme_commands_run_as_written(readme, sandbox):
    for block in readme_blocks(REPO / readme):
        cwd = sandbox  # each block starts at the repository root, as the READMEs say
        for command in block:
            expect = expectation(command)
            if expect.not_run:
                print(f"not run: {command!r}: {expect.not_run}")
                continue
            if command.startswith("cd "):
                cwd = cwd / command.split()[1]
                continue
            if command.startswith("ros2 ") and not _ros_available():
                if os.environ.get("CI", "").lower() in ("true", "1"):
                    pytest.fail(f"CI must run {command!r}: ROS 2 is not sourced")
                print(f"not run: {command!r}: ROS 2 is not sourced")
                continue
            code, output = _run(command, cwd, expect.timeout)
            where = f"{readme}: {command!r} exited {code}\n{output[-3000:]}"
            assert (code != 0) if expect.code is None else (code == expect.code), where
            assert re.search(expect.output, output), f"{where}\nexpected output matching {expect.output!r}"
            for pattern in expect.files:
                assert list(cwd.glob(pattern)), f"{where}\nexpected {pattern} in {cwd}"
