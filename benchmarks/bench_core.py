"""Per-stage latency of the core at 480x640 with 24 classes, each optimised step beside
the straightforward form it replaces, measured side by side in one run.

    python benchmarks/bench_core.py [--device cpu] [--repeats 5] [--json out.json]

Prints a table and writes JSON. Stand-in random weights (timing does not depend on
the values, except fusion, which is given a realistic number of kept queries).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ovseg_ros.benchmark import machine_info
from ovseg_ros.config import variant_config
from ovseg_ros.modeling import EOVSeg
from ovseg_ros.modeling.clip_resnet import MaskedAttentionPool
from ovseg_ros.modeling.eov_seg.decoder import DynamicChannelConv
from ovseg_ros.naive import loop_dynamic_conv_forward, loop_panoptic, repeated_query_attnpool_forward
from ovseg_ros.postprocess import panoptic_fusion
from ovseg_ros.predictor import _randomize
from ovseg_ros.vocabulary import TextEmbedder, Vocabulary, encode_prompts_full_context

CLASSES = [
    "person", "bicycle", "car", "motorcycle", "bus", "truck", "traffic light", "stop sign", "bench", "dog", "horse",
    "backpack", "umbrella", "bottle", "chair", "couch", "potted plant", "dining table", "tv", "laptop", "forklift",
    "pallet", "shelf", "floor",
]


def timed(fn, repeats: int, device: torch.device) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


@contextmanager
def published_forms():
    """Swap the rewritten modules' forwards for the published forms."""
    saved = (DynamicChannelConv.forward, MaskedAttentionPool.forward)
    DynamicChannelConv.forward = loop_dynamic_conv_forward
    MaskedAttentionPool.forward = repeated_query_attnpool_forward
    try:
        yield
    finally:
        DynamicChannelConv.forward, MaskedAttentionPool.forward = saved


def fusion_inputs(num_queries: int, num_classes: int, height: int, width: int, device: torch.device, kept: int = 50):
    """Blobby masks; `kept` queries prefer a class, the rest void (a trained model keeps a few dozen)."""
    g = torch.Generator().manual_seed(0)
    mask_cls = torch.randn(num_queries, num_classes + 1, generator=g)
    mask_cls[:kept, :num_classes] += 6.0
    mask_cls[kept:, num_classes] += 12.0
    coarse = torch.randn(num_queries, 1, height // 16, width // 16, generator=g) * 6
    mask_pred = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    thing = torch.arange(num_classes) % 2 == 0
    return mask_cls.to(device), mask_pred.to(device), thing.to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    model = EOVSeg(variant_config("S")).eval()
    _randomize(model)
    model.to(device)
    images = torch.randn(1, 3, args.height, args.width, device=device)
    embedder = TextEmbedder(model.text_encoder)
    text, _ = embedder.classifier(Vocabulary.parse(CLASSES))
    text_void = model.text_with_void(text)
    rows: list[dict] = []

    def add(stage: str, ours: list[float], naive: list[float] | None = None, note: str = "") -> None:
        row = {"stage": stage, "ours_ms": 1e3 * statistics.median(ours)}
        if naive is not None:
            row["naive_ms"] = 1e3 * statistics.median(naive)
            row["speedup"] = row["naive_ms"] / row["ours_ms"]
        row["note"] = note
        rows.append(row)

    with torch.inference_mode():
        res = model.image_encoder(images)
        vit = model.vit_stem(images)
        pixels = model.neck(res)
        _, masks, _ = model.decoder(pixels, vit, text_void)
        pool_masks = F.interpolate(masks[-1], size=res[-1].shape[-2:], mode="bilinear", align_corners=False)
        r = args.repeats
        add("backbone (CLIP RN50)", timed(lambda: model.image_encoder(images), r, device))
        add("ViT stem (patch + block 0)", timed(lambda: model.vit_stem(images), r, device))
        add("neck (deformable)", timed(lambda: model.neck(res), r, device))
        ours = timed(lambda: model.decoder(pixels, vit, text_void), r, device)
        with published_forms():
            naive = timed(lambda: model.decoder(pixels, vit, text_void), r, device)
        add("decoder (VAS + 3 stages)", ours, naive, "naive: per-image conv1d loop (batch 1)")
        ours = timed(lambda: model.image_encoder.attnpool(res[-1], pool_masks), r, device)
        with published_forms():
            naive = timed(lambda: model.image_encoder.attnpool(res[-1], pool_masks), r, device)
        add("out-of-vocabulary branch", ours, naive, "naive: query repeated per mask, full MHA")
        mask_cls, mask_pred, thing = fusion_inputs(100, len(CLASSES), args.height, args.width, device)
        ours = timed(lambda: panoptic_fusion(mask_cls, mask_pred, thing), r, device)
        naive = timed(lambda: loop_panoptic(mask_cls, mask_pred, thing), r, device)
        add("panoptic fusion", ours, naive, "100 queries, 50 kept; naive: published per-query loop")
        ours = timed(lambda: model(images, text), r, device)
        with published_forms():
            naive = timed(lambda: model(images, text), r, device)
        add("whole forward", ours, naive, "naive: both published forms above")

    cached = TextEmbedder(model.text_encoder)
    ours = timed(lambda: TextEmbedder(model.text_encoder).embed_names(CLASSES), max(1, r // 2), device)
    naive = timed(lambda: encode_prompts_full_context(model.text_encoder, embedder.tokenizer, CLASSES), max(1, r // 2), device)
    add(f"vocabulary encode ({len(CLASSES)} classes)", ours, naive, "naive: all 77 tokens of every prompt")
    cached.embed_names([f"class {i}" for i in range(150)])
    add("vocabulary update (+1 class to 150)", timed(lambda: (cached._cache.pop("forklift", None), cached.embed_names(["forklift"])), r, device), None, "cached names are not re-encoded")

    machine = {"device": str(device), **machine_info(str(device)), "input": f"{args.height}x{args.width}", "classes": len(CLASSES)}
    print(f"machine: {machine}")
    print(f"{'stage':38s} {'ours ms':>10s} {'naive ms':>10s} {'speedup':>8s}  note")
    for row in rows:
        naive = f"{row['naive_ms']:10.1f}" if "naive_ms" in row else f"{'':10s}"
        speed = f"{row['speedup']:7.1f}x" if "speedup" in row else f"{'':8s}"
        print(f"{row['stage']:38s} {row['ours_ms']:10.1f} {naive} {speed}  {row['note']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
