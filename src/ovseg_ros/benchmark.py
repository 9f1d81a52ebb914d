"""`ovseg benchmark`: latency of each pipeline stage (decode, preprocess, engine,
post-process, message building) and end-to-end FPS, as a table and JSON, with the
machine it ran on. Frames are synthetic rgb8 messages of the sample street image."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from ovseg_ros.coco_classes import COCO_PANOPTIC_CLASSES
from ovseg_ros.node.pipeline import STAGES

ASSETS = Path(__file__).resolve().parent / "assets"


def machine_info(device: str) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def percentiles(values: list[float]) -> dict:
    ms = np.asarray(values) * 1e3
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)), "p99_ms": float(np.percentile(ms, 99))}


def sample_frame(height: int, width: int) -> np.ndarray:
    """The sample street photo at the camera size, RGB."""
    return cv2.cvtColor(cv2.resize(cv2.imread(str(ASSETS / "street.jpg")), (width, height)), cv2.COLOR_BGR2RGB)


def pipeline_latency(predictor, rgb: np.ndarray, iterations: int, warmup: int) -> tuple[dict, float]:
    """Per-stage latency rows and end-to-end FPS of the node's frame pipeline (rgb8
    message in, ROS messages out) on one image, with the predictor's vocabulary."""
    from ovseg_ros import messages
    from ovseg_ros.interfaces import rosbags_typestore
    from ovseg_ros.node.frames import Frame
    from ovseg_ros.node.pipeline import FramePipeline

    height, width = rgb.shape[:2]
    typestore, has_vision = rosbags_typestore()
    pipeline = FramePipeline(predictor, messages.RosbagsFactory(typestore), warn=print, with_detections=has_vision)
    Image, Header, Time = (typestore.types[f"{p}/msg/{n}"] for p, n in (("sensor_msgs", "Image"), ("std_msgs", "Header"), ("builtin_interfaces", "Time")))
    message = Image(header=Header(stamp=Time(sec=0, nanosec=0), frame_id="camera"), height=height, width=width,
                    encoding="rgb8", is_bigendian=0, step=width * 3, data=rgb.reshape(-1))

    per_stage: dict[str, list[float]] = {stage: [] for stage in STAGES}
    end_to_end: list[float] = []
    for i in range(warmup + iterations):
        start = time.perf_counter()
        outputs = pipeline.process([Frame("camera", message, 0.0)])
        elapsed = time.perf_counter() - start
        if not outputs:
            raise RuntimeError("the pipeline dropped the benchmark frame")
        if i >= warmup:
            end_to_end.append(elapsed)
            for stage in STAGES:
                per_stage[stage].append(pipeline.stats.latency[stage][-1])

    rows = {stage: percentiles(values) for stage, values in per_stage.items()}
    rows["end_to_end"] = percentiles(end_to_end)
    return rows, 1.0 / float(np.median(end_to_end))


def benchmark_vocabulary(num_classes: int) -> tuple[str, str]:
    """(classes, things): the first `num_classes` COCO panoptic classes, as the node takes them."""
    names = [names for _, _, names in COCO_PANOPTIC_CLASSES[:num_classes]]
    things = [names.split(",")[0] for _, thing, names in COCO_PANOPTIC_CLASSES[:num_classes] if thing]
    return "; ".join(names), "; ".join(things)


def run(args, predictor) -> int:
    """`ovseg benchmark`: `predictor` built by the CLI with benchmark_vocabulary's classes."""
    height, width = args.size
    rows, fps = pipeline_latency(predictor, sample_frame(height, width), args.iterations, args.warmup)
    result = {
        "model": f"{predictor.model_config.family} {predictor.model_config.variant}",
        "backend": args.backend,
        "device": args.device,
        "precision": "fp16" if args.fp16 else "fp32",
        "cuda_graphs": bool(args.cuda_graphs),
        "weights": "stand-in random" if args.weights == "random" else str(args.checkpoint),
        "input": f"{height}x{width}",
        "classes": args.num_classes,
        "iterations": args.iterations,
        "fps": fps,
        "stages": rows,
        "machine": machine_info(args.device),
    }
    print(f"ovseg benchmark: {result['model']}, backend {result['backend']} on {result['device']} ({result['precision']}"
          f"{', CUDA graphs' if result['cuda_graphs'] else ''}), {result['input']}, {result['classes']} classes, "
          f"{args.iterations} iterations")
    print("machine: " + ", ".join(f"{k} {v}" for k, v in result["machine"].items()))
    print(f"{'stage':14s} {'median ms':>10s} {'p90 ms':>10s} {'p99 ms':>10s}")
    for stage, row in rows.items():
        print(f"{stage:14s} {row['median_ms']:10.1f} {row['p90_ms']:10.1f} {row['p99_ms']:10.1f}")
    print(f"end-to-end FPS (median): {result['fps']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0
