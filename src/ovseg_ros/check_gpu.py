"""`ovseg check-gpu`: one command for a machine with a GPU.

For EOV-Seg S and FC-CLIP R50 at the camera size (default 480x640): the CPU fp32 torch
result is the reference; then onnxruntime on the exported file, torch on CUDA (fp32,
fp16, fp16 with CUDA graphs) and TensorRT (fp32 and fp16 engines, built here) run on the
same images with the same vocabulary. Each row is compared with the reference
(panoptic and semantic pixels, per-query classes, mask IoU; tolerances below) and timed
through the node's frame pipeline (decode, preprocess, engine, post-process, messages;
end-to-end = camera message in to messages out). A table and JSON. Whatever cannot run
here (no GPU, no TensorRT) is listed as skipped, with the reason.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from ovseg_ros.mixed_precision import AgreementTargets

log = logging.getLogger(__name__)

# fp32 on a GPU differs from CPU fp32 by summation order and TF32 convolutions
FP32_TOLERANCE = AgreementTargets(panoptic_pixels=0.995, semantic_pixels=0.995, query_classes=0.99, mask_iou=0.98)
FP16_TOLERANCE = AgreementTargets()  # the targets the fp32 layer set is measured against
MODELS = (("eov_seg", "S", "eovseg_r50"), ("fc_clip", "R50", "fcclip_r50"))
ROWS = (  # backend, device, precision, CUDA graphs
    ("torch", "cpu", "fp32", False),
    ("onnxruntime", "cpu", "fp32", False),
    ("torch", "cuda", "fp32", False),
    ("torch", "cuda", "fp16", False),
    ("torch", "cuda", "fp16", True),
    ("tensorrt", "cuda", "fp32", False),
    ("tensorrt", "cuda", "fp16", False),
)


def _fixture_cases(fixtures: Path | None, folder: str, size: tuple[int, int]) -> list[tuple[np.ndarray, list[str], list[str]]]:
    """(image resized to `size`, classes, things) per network case of a parity fixture
    folder; without fixtures, the sample photos with the node's default vocabulary."""
    from ovseg_ros.config import DEFAULT_CLASSES, DEFAULT_THINGS
    from ovseg_ros.fp16_calibration import sample_images

    height, width = size
    if fixtures is not None and (fixtures / folder / "cases.json").is_file():
        cases = []
        for case in json.loads((fixtures / folder / "cases.json").read_text()):
            if case.get("kind") == "network":  # things are class indices there
                image = np.load(fixtures / folder / f"{case['name']}.npz")["image"]
                cases.append((cv2.resize(image, (width, height)), case["classes"], case["things"]))
        if cases:
            return cases
    return [(cv2.resize(image, (width, height)), DEFAULT_CLASSES, DEFAULT_THINGS) for image in sample_images()]


def _results(predictor, cases) -> list[dict]:
    from ovseg_ros.fp16_calibration import pipeline_results

    out = []
    for image, classes, things in cases:
        state = predictor.prepare_vocabulary(classes, things)
        batch = predictor.preprocess([image])
        output = predictor.engine(batch.images, state.text)
        out += pipeline_results(predictor, output, batch, state)
    return out


def _engine_for(row, model, onnx_file: Path | None, cache: Path):
    """The engine of one row, or the reason it cannot run here."""
    import torch

    from ovseg_ros.backends import TorchEngine

    backend, device, precision, graphs = row
    if device == "cuda" and not torch.cuda.is_available():
        return None, "no CUDA GPU on this machine"
    if backend == "torch":
        return TorchEngine(model, device, fp16=precision == "fp16", cuda_graphs=graphs), None
    if backend == "onnxruntime":
        from ovseg_ros.backends.onnxruntime_engine import OnnxRuntimeEngine

        return OnnxRuntimeEngine(onnx_file, device), None
    try:
        from ovseg_ros.backends.tensorrt_engine import BuildConfig, TensorRTEngine, build_engine, import_tensorrt

        import_tensorrt()
    except ImportError as exc:
        return None, str(exc).split(":")[0] + " (TensorRT is not installed)"
    path = build_engine(onnx_file, BuildConfig(precision=precision, cache_dir=cache), device)
    return TensorRTEngine(path, device), None


def _tensorrt_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


def run(args) -> int:
    """The check in `--work-dir`, or in a temporary folder removed afterwards (the exports
    are hundreds of MB per model)."""
    if args.work_dir:
        Path(args.work_dir).mkdir(parents=True, exist_ok=True)
        return _run_in(args, Path(args.work_dir))
    with tempfile.TemporaryDirectory(prefix="ovseg_check_gpu_") as work:
        return _run_in(args, Path(work))


def _run_in(args, work: Path) -> int:
    from ovseg_ros.benchmark import machine_info, pipeline_latency
    from ovseg_ros.config import InferenceConfig
    from ovseg_ros.fp16_calibration import calibrate_export
    from ovseg_ros.mixed_precision import Agreement, compare
    from ovseg_ros.onnx_export import export_onnx
    from ovseg_ros.predictor import Predictor, build_model_from, read_weights
    from ovseg_ros.vocabulary import TextEmbedder

    height, width = args.size
    report = {"input": f"{height}x{width}", "machine": machine_info("cuda"), "rows": [], "skipped": [],
              "tolerances": {"fp32": asdict(FP32_TOLERANCE), "fp16": asdict(FP16_TOLERANCE)}}
    checkpoints = {"eov_seg": args.eov_seg_checkpoint, "fc_clip": args.fc_clip_checkpoint}
    for family, variant, folder in MODELS:
        if args.models and family not in args.models:
            continue
        checkpoint = checkpoints[family]
        weights = read_weights(checkpoint, variant, stand_in_weights=checkpoint is None, model=family)
        model = build_model_from(weights).eval()
        name = f"{family} {variant}"
        cases = _fixture_cases(args.fixtures, folder, (height, width))
        onnx_file = work / f"{folder}_{height}x{width}.onnx"
        reference = None
        calibrated: dict[str, bool] = {}
        for row in ROWS:
            backend, device, precision, graphs = row
            label = f"{backend} {device} {precision}{' graphs' if graphs else ''}"
            try:
                if backend in ("onnxruntime", "tensorrt") and not onnx_file.exists():
                    export_onnx(model, onnx_file, height, width)
                if backend == "tensorrt" and precision == "fp16" and _tensorrt_available() and not calibrated.get(family):
                    calibrate_export(onnx_file, model)  # the fp32 layer set an fp16 engine needs
                    calibrated[family] = True
                engine, why = _engine_for(row, model, onnx_file, work / "engines")
            except Exception as exc:  # a row that cannot be built is reported, the others go on
                engine, why = None, f"{type(exc).__name__}: {exc}"
            if engine is None:
                report["skipped"].append({"model": name, "row": label, "reason": why})
                print(f"[{name}] {label}: skipped: {why}")
                continue
            predictor = Predictor(engine, TextEmbedder(model.text_encoder.to(engine.device)), InferenceConfig(min_size=0), model.config)
            start = time.perf_counter()
            results = _results(predictor, cases)
            entry = {"model": name, "row": label, "weights": weights.source}
            if reference is None:
                reference, agreement, ok = results, None, True
            else:
                agreement = Agreement.mean([compare(r, c) for r, c in zip(reference, results)])
                ok = agreement.meets(FP16_TOLERANCE if precision == "fp16" else FP32_TOLERANCE)
            predictor.set_vocabulary(cases[0][1], cases[0][2])
            iterations = args.iterations if device == "cuda" else args.cpu_iterations
            stages, fps = pipeline_latency(predictor, cases[0][0], iterations, 1 if device == "cpu" else args.warmup)
            entry.update({"agreement": asdict(agreement) if agreement else "reference", "pass": ok, "fps": fps,
                          "stages": stages, "seconds": time.perf_counter() - start})
            report["rows"].append(entry)
            print(f"[{name}] {label}: {'reference' if agreement is None else ('ok' if ok else 'OUT OF TOLERANCE')}, {fps:.2f} FPS")
            model.to("cpu")
    _print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0 if all(r["pass"] for r in report["rows"]) else 1


def _print_table(report: dict) -> None:
    print(f"\novseg check-gpu, {report['input']}; machine: " + ", ".join(f"{k} {v}" for k, v in report["machine"].items()))
    print("agreement with CPU fp32 (panoptic px / semantic px / query classes / mask IoU); tolerances fp32 "
          f"{_targets(report['tolerances']['fp32'])}, fp16 {_targets(report['tolerances']['fp16'])}")
    header = f"{'model':12s} {'row':24s} {'agreement':30s} {'decode':>7s} {'prep':>7s} {'engine':>8s} {'post':>7s} {'msgs':>7s} {'e2e ms':>8s} {'FPS':>7s}"
    print(header)
    for r in report["rows"]:
        agreement = r["agreement"]
        text = "reference" if agreement == "reference" else " / ".join(
            f"{100 * agreement[k]:.1f}" for k in ("panoptic_pixels", "semantic_pixels", "query_classes", "mask_iou"))
        if agreement != "reference" and not r["pass"]:
            text += " FAIL"
        stages = r["stages"]
        cells = [stages.get(s, {}).get("median_ms", float("nan")) for s in ("decode", "preprocess", "engine", "postprocess", "messages")]
        print(f"{r['model']:12s} {r['row']:24s} {text:30s} " + " ".join(f"{c:7.1f}" for c in cells[:2])
              + f" {cells[2]:8.1f} " + " ".join(f"{c:7.1f}" for c in cells[3:])
              + f" {stages['end_to_end']['median_ms']:8.1f} {r['fps']:7.2f}")
    for s in report["skipped"]:
        print(f"skipped: {s['model']} {s['row']}: {s['reason']}")


def _targets(t: dict) -> str:
    return "/".join(f"{100 * t[k]:.1f}" for k in ("panoptic_pixels", "semantic_pixels", "query_classes", "mask_iou"))
