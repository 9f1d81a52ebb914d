"""fp16 against fp32 for every parity fixture folder: which layers must stay fp32, and how
far an fp16 engine's result would be from fp32 with and without them.

    python benchmarks/bench_fp16.py [--parity ../shared/parity] [--folders eovseg_r50 ...] [--json out.json]

Per folder: the model with the folder's deterministic stand-in weights, exported at its
cases' padded size; fp16 emulated in onnxruntime (every float node's output, the
weights and the inputs rounded to half precision, mixed_precision.py); the fp32 set
measured on the folder's cases with their vocabularies; then the mixed-precision file
(fp16 outside the set) run for real in onnxruntime. Prints a table and JSON:
agreement with fp32 (panoptic pixels matched segment to segment, semantic pixels,
per-query classes including void, mean and minimum per-query mask IoU) for all-fp16
and for fp16 with the fp32 set, and the set itself (node names, grouped by module).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support import load_cases, write_stand_in_checkpoint  # noqa: E402

from ovseg_ros.benchmark import machine_info  # noqa: E402
from ovseg_ros.config import InferenceConfig  # noqa: E402
from ovseg_ros.backends import create_engine  # noqa: E402
from ovseg_ros.fp16_calibration import Calibration  # noqa: E402
from ovseg_ros.mixed_precision import mixed_precision_model, module_of  # noqa: E402
from ovseg_ros.onnx_export import export_onnx  # noqa: E402
from ovseg_ros.predictor import Predictor, build_model  # noqa: E402
from ovseg_ros.vocabulary import TextEmbedder  # noqa: E402

FOLDERS = ("eovseg_r50", "eovseg_r50x4", "eovseg_convnext_l", "fcclip_r50", "fcclip_convnext_l")


def measure(folder: Path, work: Path) -> dict:
    start = time.perf_counter()
    cases = [c for c in load_cases(folder) if c["kind"] == "network"]
    checkpoint = write_stand_in_checkpoint(folder, work / f"{folder.name}.pth")
    model = build_model(checkpoint)
    checkpoint.unlink()
    height, width = cases[0]["padded_size"]
    path = export_onnx(model, work / f"{folder.name}.onnx", height, width)
    engine = create_engine("onnxruntime", model, "cpu", str(path))
    predictor = Predictor(engine, TextEmbedder(model.text_encoder), InferenceConfig(min_size=0), model.config)
    calibration_cases = []
    for case in cases:
        image = np.load(folder / f"{case['name']}.npz")["image"]
        state = predictor.prepare_vocabulary(case["classes"], case["things"])
        calibration_cases.append((predictor.preprocess([image]), state))
    calibration = Calibration(onnx.load(str(path)), predictor, calibration_cases)
    found = calibration.find_fp32_nodes()
    # the mixed-precision file a strongly typed TensorRT builds from, run for real in
    # onnxruntime (fp16 kernels where its CPU has them): a check on the emulation
    mixed = calibration.evaluate(mixed_precision_model(calibration.model, found.nodes))
    return {
        "folder": folder.name,
        "model": f"{model.family} {model.config.variant}",
        "input": f"{height}x{width}",
        "cases": [c["name"] for c in cases],
        "fp32_nodes": found.nodes,
        "fp32_modules": dict(Counter(module_of(n) for n in found.nodes)),
        "overflow": found.overflow,
        "modules_added": found.modules,
        "all_fp16": found.agreement_all_fp16.__dict__,
        "with_fp32_set": found.agreement.__dict__,
        "mixed_precision_file": mixed.__dict__,
        "evaluations": found.evaluations,
        "seconds": time.perf_counter() - start,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parity", type=Path, default=REPO.parent / "shared" / "parity")
    parser.add_argument("--folders", nargs="+", default=list(FOLDERS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.folders:
            rows.append(measure(args.parity / name, Path(tmp)))
            print(f"measured {name} in {rows[-1]['seconds']:.0f} s", flush=True)

    def cells(a: dict) -> str:
        return (f"{100 * a['panoptic_pixels']:7.2f} {100 * a['semantic_pixels']:7.2f} {100 * a['query_classes']:7.2f} "
                f"{100 * a['mask_iou']:7.2f} {100 * a['mask_iou_min']:7.2f}")

    print("\nfp16 (emulated) against fp32, % agreement: panoptic px, semantic px, query classes, mask IoU mean, min")
    print(f"{'folder':18s} {'input':8s} {'fp32 nodes':>10s} | {'all fp16':^39s} | {'with the fp32 set':^39s} | "
          f"{'mixed-precision file, onnxruntime':^39s}")
    for r in rows:
        print(f"{r['folder']:18s} {r['input']:8s} {len(r['fp32_nodes']):10d} | {cells(r['all_fp16'])} | {cells(r['with_fp32_set'])} | "
              f"{cells(r['mixed_precision_file'])}")
    for r in rows:
        print(f"{r['folder']}: fp32 set by module: {r['fp32_modules'] or 'none'}")
    result = {"machine": machine_info("cpu"), "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
