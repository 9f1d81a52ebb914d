"""EOV-Seg (fast) beside FC-CLIP (accurate), SAN and SED (semantic only): per-stage latency
on the same image and vocabulary, in one run, and FLOPs per frame, so a robot team can
pick per deployment. SED always runs at its 768 x 768 (early rejection off).

    python benchmarks/bench_models.py [--device cpu] [--repeats 3] [--size 480x640] [--json out.json]

Prints a table and writes JSON. Stand-in random weights: timing and FLOPs do not depend
on the values. Stages are timed with forward hooks on each network's top-level parts;
"CLIP view of masks" is the out-of-vocabulary branch (CLIP's pooling and head), and
"post-processing" the shared classification, ensemble, semantic map and panoptic fusion.
FLOPs are counted by torch.utils.flop_counter (matmuls, convolutions, attention; the
deformable sampling - DCN in EOV-Seg's neck, grid_sample in FC-CLIP's pixel decoder -
is not counted, a few percent at most).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ovseg_ros.benchmark import machine_info
from ovseg_ros.config import InferenceConfig
from ovseg_ros.predictor import Predictor

MODELS = (("eov_seg", "S"), ("fc_clip", "R50"), ("eov_seg", "L"), ("fc_clip", "L"), ("san", "B"), ("san", "L"), ("sed", "B"),
          ("sed", "L"))
STAGES = {
    "eov_seg": (("image_encoder", "CLIP backbone"), ("vit_stem", "ViT stem"), ("neck", "neck / pixel decoder"),
                ("decoder", "decoder")),
    "fc_clip": (("image_encoder", "CLIP backbone"), ("pixel_decoder", "neck / pixel decoder"),
                ("transformer_decoder", "decoder")),
    "san": (("clip_features", "CLIP backbone"), ("side_adapter", "side adapter (SAN)"),
            ("recognition_head", "recognition (SAN: CLIP's last blocks)")),
    "sed": (("image_encoder", "CLIP backbone"), ("decoder.decoder1", "decoder"), ("decoder.decoder2", "decoder"),
            ("decoder.decoder3", "decoder")),  # the cost volume and heads count in the whole network only
}
OOV_MODULES = ("image_encoder.attnpool", "image_encoder.head", "image_encoder.trunk.head")  # CLIP's view of masks
CLASSES = (
    "person; bicycle; car; motorcycle; bus; truck; traffic light; stop sign; bench; dog; horse; backpack; umbrella; "
    "bottle; chair; couch; potted plant; dining table; tv; laptop; forklift; pallet; shelf; floor"
)
ASSET = Path(__file__).resolve().parents[1] / "src" / "ovseg_ros" / "assets" / "street.jpg"


class StageTimer:
    """Wall time spent inside given submodules during one forward (hooks, CUDA-synced)."""

    def __init__(self, model: torch.nn.Module, stages: dict[str, str], device: torch.device) -> None:
        self.device, self.seconds, self._start = device, {}, {}
        self.handles = []
        modules = dict(model.named_modules())
        for path, label in stages.items():
            if path in modules:
                self.handles.append(modules[path].register_forward_pre_hook(lambda m, a, label=label: self._enter(label)))
                self.handles.append(modules[path].register_forward_hook(lambda m, a, o, label=label: self._exit(label)))

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _enter(self, label: str) -> None:
        self._sync()
        self._start[label] = time.perf_counter()

    def _exit(self, label: str) -> None:
        self._sync()
        self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - self._start.pop(label)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def measure(family: str, variant: str, image: np.ndarray, device: str, repeats: int) -> dict:
    predictor = Predictor.from_checkpoint(
        None, variant, device, InferenceConfig(min_size=0), stand_in_weights=True, model=family, classes=CLASSES
    )
    model, state = predictor.engine.model, predictor._state
    batch = predictor.preprocess([image])
    stages = dict(STAGES[family])
    if family in ("eov_seg", "fc_clip"):  # (SED's image_encoder.head is its dense head, not a view of masks)
        stages |= {path: "CLIP view of masks" for path in OOV_MODULES}
    rows: dict[str, list[float]] = {}
    with torch.inference_mode():
        predictor.predict([image])  # warm-up
        for _ in range(repeats):
            timer = StageTimer(model, stages, predictor.device)
            start = time.perf_counter()
            output = predictor.engine(batch.images, state.text)
            network = time.perf_counter() - start
            timer.remove()
            start = time.perf_counter()
            predictor.postprocess(output, batch, state)
            post = time.perf_counter() - start
            for label, seconds in timer.seconds.items():
                rows.setdefault(label, []).append(seconds)
            rows.setdefault("whole network", []).append(network)
            rows.setdefault("post-processing", []).append(post)
            rows.setdefault("frame (network + post-processing)", []).append(network + post)
    images, text = batch.images.clone(), state.text.clone()  # ordinary tensors: the counter's module hooks need them
    model.requires_grad_(False)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(images, text)
    parameters = sum(p.numel() for p in model.parameters())
    text_tower = sum(p.numel() for p in model.text_encoder.parameters())
    return {
        "model": f"{family} {variant}",
        "milliseconds": {label: 1e3 * statistics.median(values) for label, values in rows.items()},
        "gflops_per_frame": counter.get_total_flops() / 1e9,
        "parameters_millions": parameters / 1e6,
        "parameters_without_text_tower_millions": (parameters - text_tower) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", default="480x640", help="HxW the image is fed at")
    parser.add_argument("--models", default=",".join(f"{f}:{v}" for f, v in MODELS), help="family:variant,...")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    image = cv2.cvtColor(cv2.resize(cv2.imread(str(ASSET)), (width, height)), cv2.COLOR_BGR2RGB)
    results = [measure(*spec.split(":"), image, args.device, args.repeats) for spec in args.models.split(",")]

    labels = ["CLIP backbone", "ViT stem", "neck / pixel decoder", "decoder", "CLIP view of masks", "side adapter (SAN)",
              "recognition (SAN: CLIP's last blocks)", "whole network", "post-processing", "frame (network + post-processing)"]
    names = [r["model"] for r in results]
    print(f"bench_models: {height}x{width}, 24 classes, device {args.device}, medians of {args.repeats}")
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine_info(args.device).items()))
    print(f"{'stage (ms)':36s}" + "".join(f"{n:>16s}" for n in names))
    for label in labels:
        cells = [r["milliseconds"].get(label) for r in results]
        print(f"{label:36s}" + "".join(f"{c:16.0f}" if c is not None else f"{'-':>16s}" for c in cells))
    print(f"{'GFLOPs per frame':36s}" + "".join(f"{r['gflops_per_frame']:16.1f}" for r in results))
    print(f"{'parameters (M)':36s}" + "".join(f"{r['parameters_millions']:16.1f}" for r in results))
    base = results[0]["milliseconds"]["frame (network + post-processing)"]
    print(f"{'frame time vs ' + names[0]:36s}" + "".join(f"{r['milliseconds']['frame (network + post-processing)'] / base:15.2f}x" for r in results))
    if args.json:
        args.json.write_text(json.dumps({"size": [height, width], "device": args.device, "repeats": args.repeats,
                                         "machine": machine_info(args.device), "results": results}, indent=1))


if __name__ == "__main__":
    main()
