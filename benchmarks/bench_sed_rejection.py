"""SED's category early rejection: off, the published dynamic form (top-k per pixel, the
survivors only go on), and the static form an exported graph needs (a fixed number of
classes kept per stage), side by side on one image and vocabulary, in one run.

    python benchmarks/bench_sed_rejection.py [--classes 150] [--topk 8] [--keep 32] [--json out.json]

Prints a table (network milliseconds, classes evaluated at stages 1-3, how far each
form's scores are from the dynamic form's) and writes JSON. Stand-in random weights:
the times are the network's, but which classes survive is arbitrary (trained weights
reject far more of a 150-class vocabulary, so the published form gains more than here).
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

from ovseg_ros.benchmark import machine_info
from ovseg_ros.coco_classes import COCO_PANOPTIC_CLASSES
from ovseg_ros.modeling.sed.config import StaticTopKRejection, TopKRejection
from ovseg_ros.predictor import build_model

ASSET = Path(__file__).resolve().parents[1] / "src" / "ovseg_ros" / "assets" / "street.jpg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="B")
    parser.add_argument("--classes", type=int, default=133, help="the first N COCO panoptic classes (at most 133)")
    parser.add_argument("--topk", type=int, default=8, help="the top-k of the rule (SED's fast setting: 8)")
    parser.add_argument("--keep", type=int, default=32, help="classes the static form keeps after each stage")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model(None, args.variant, stand_in_weights=True, model="sed")
    names = [names for _, _, names in COCO_PANOPTIC_CLASSES[: args.classes]]
    with torch.inference_mode():
        text = model.encode_text(names)
    from ovseg_ros.modeling.sed.preprocess import preprocess

    image = cv2.cvtColor(cv2.imread(str(ASSET)), cv2.COLOR_BGR2RGB)
    x = preprocess(image, model.config)
    with torch.inference_mode():
        features = model.encode_image(x)
        dynamic = model.decode(features, text, TopKRejection(args.topk))
    survivors = int(dynamic.active[3].sum())
    forms = {
        "off": None,
        f"dynamic (top-{args.topk})": TopKRejection(args.topk),
        f"static, keep {survivors} (= the dynamic survivors here)": StaticTopKRejection(args.topk, survivors, mask_rejected=True),
        f"static, keep {args.keep}": StaticTopKRejection(args.topk, args.keep, mask_rejected=True),
    }
    rows = []
    with torch.inference_mode():
        start = time.perf_counter()
        model.encode_image(x)
        encoder_ms = 1e3 * (time.perf_counter() - start)
        for label, rejection in forms.items():
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                out = model.decode(features, text, rejection)
                times.append(time.perf_counter() - start)
            evaluated = [int(out.active[s].sum()) for s in (1, 2, 3)]
            difference = float((out.scores - dynamic.scores).abs().max())
            rows.append({"form": label, "decoder_ms": 1e3 * statistics.median(times), "classes_at_stages_1_2_3": evaluated,
                         "max_score_difference_vs_dynamic": difference})
    print(f"bench_sed_rejection: SED {args.variant}, {args.classes} classes, 768x768, medians of {args.repeats}; "
          f"image encoder {encoder_ms:.0f} ms (the same for every form)")
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine_info("cpu").items()))
    base = rows[0]["decoder_ms"]
    print(f"{'form':52s}{'decoder ms':>12s}{'vs off':>8s}{'classes at stages 1/2/3':>26s}{'max |score - dynamic|':>24s}")
    for row in rows:
        classes = "/".join(map(str, row["classes_at_stages_1_2_3"]))
        print(f"{row['form']:52s}{row['decoder_ms']:12.0f}{row['decoder_ms'] / base:7.2f}x{classes:>26s}"
              f"{row['max_score_difference_vs_dynamic']:24.2e}")
    if args.json:
        args.json.write_text(json.dumps({"variant": args.variant, "classes": args.classes, "topk": args.topk,
                                         "encoder_ms": encoder_ms, "machine": machine_info("cpu"), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
