"""`ovseg` command line: segment images, process bags, export and build engines, benchmark.

Cheap checks come first (arguments, files, the checkpoint file, the vocabulary), so a
mistake is reported in seconds, before any model is built.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path

from ovseg_ros.config import DEFAULT_CLASSES, DEFAULT_THINGS, MODEL_HELP, MODELS, InferenceConfig

log = logging.getLogger("ovseg")

EXIT_CODES = """exit codes:
  0  everything worked
  1  some inputs failed (unreadable images, undecodable frames); the others were processed
  2  usage or input error (bad arguments, missing files, not a checkpoint, bad vocabulary),
     reported before any model is built"""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class UsageError(ValueError):
    """A command line that cannot work; exit code 2."""


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--checkpoint", help="EOV-Seg, FC-CLIP, SAN or SED checkpoint (official detectron2 .pth/.pkl, or one of ours)")
    group.add_argument(
        "--model", choices=list(MODELS), default=None,
        help=f"{MODEL_HELP}; default: the checkpoint's (eov_seg with stand-in weights)",
    )
    group.add_argument(
        "--weights", choices=["checkpoint", "random"], default="checkpoint",
        help="'random' runs with stand-in random weights (smoke tests and demos only: output is noise)",
    )
    group.add_argument(
        "--variant", default=None,
        help="EOV-Seg: S (RN50 CLIP), M (RN50x4), L (ConvNeXt-L); FC-CLIP: R50, L; default: the checkpoint's "
        "(with stand-in weights: S, FC-CLIP L)",
    )
    group.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, auto (default: %(default)s)")
    group.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "tensorrt"])
    group.add_argument("--engine", help="ONNX file from `ovseg export` (onnxruntime, tensorrt) or a built .engine (tensorrt)")
    group.add_argument("--fp16", action="store_true", help="half precision (torch on CUDA: autocast; tensorrt: fp16 engine)")
    group.add_argument("--cuda-graphs", action="store_true", help="torch on CUDA: replay the forward as a CUDA graph")
    group.add_argument("--min-size", type=int, default=640, help="short side after resizing, 0 keeps the size (default: %(default)s)")
    group.add_argument("--max-size", type=int, default=2560, help="cap on the long side after resizing (default: %(default)s)")
    group.add_argument(
        "--classes", default=DEFAULT_CLASSES,
        help='the vocabulary: ";" separates classes, "," synonyms of one class (default: "%(default)s")',
    )
    group.add_argument(
        "--things", default=None,
        help="classes that are countable objects, same syntax; default: the classes with a COCO thing name "
        f'(person, car, dog, ...; the default vocabulary\'s are "{DEFAULT_THINGS}")',
    )


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="ovseg", epilog=EXIT_CODES, formatter_class=formatter,
        description="Open-vocabulary panoptic segmentation: EOV-Seg (fast) or FC-CLIP (accurate).\n\n"
        f"default vocabulary (--classes): {DEFAULT_CLASSES}\n"
        f"its things (--things): {DEFAULT_THINGS}; for other classes, those with a COCO thing name\n"
        "`ovseg <command> --help` for each command's options",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser(
        "segment", help="segment image files; writes COCO panoptic PNG + JSON and overlays", epilog=EXIT_CODES,
        formatter_class=formatter,
        description="Segment image files. Per image: <name>_panoptic.png (COCO panoptic ids), <name>.json "
        "(segments) and <name>_overlay.jpg; panoptic.json collects them with the categories.",
    )
    seg.add_argument(
        "images", nargs="+", type=Path,
        help="image files (JPEG, PNG, ...) or folders of them; unreadable ones are reported and skipped (exit code 1)",
    )
    seg.add_argument("--out", type=Path, default=Path("ovseg_out"), help="output folder (default: %(default)s)")
    seg.add_argument("--no-overlay", action="store_true", help="skip the colour overlay images")
    _add_model_arguments(seg)
    seg.set_defaults(run=run_segment)

    bag = sub.add_parser(
        "bag", help="run the node's pipeline over a rosbag2 and write its outputs to a new bag", epilog=EXIT_CODES,
        formatter_class=formatter,
    )
    bag.add_argument("bag_in", type=Path, help="input rosbag2 folder (sqlite3 or mcap)")
    bag.add_argument("--topic", action="append", required=True, help="camera image topic (repeat for several)")
    bag.add_argument("--out", type=Path, required=True, help="output rosbag2 folder (must not exist)")
    bag.add_argument("--node-name", default="ovseg_node", help="output topics are /<node-name>/<camera>/...")
    bag.add_argument("--overlay", action="store_true", help="also write rgb8 overlays")
    bag.add_argument("--no-copy-input", action="store_true", help="do not copy the camera topics into the output")
    bag.add_argument("--vision-msgs", help="folder with vision_msgs msg/*.msg when ROS is not installed")
    bag.add_argument("--depth-topic", action="append", default=[],
                     help="depth image aligned to the --topic of the same position (16UC1 mm or 32FC1 m): segments in 3D")
    bag.add_argument("--camera-info-topic", action="append", default=[],
                     help="camera_info of the --topic of the same position (default: the one beside the image topic)")
    bag.add_argument("--points", action="store_true", help="with depth, also write the labelled point clouds")
    bag.add_argument("--no-tracking", action="store_true", help="no track ids (Segment.track_id 0, detection id = segment id)")
    bag.add_argument("--sync-slop", type=float, default=0.02, help="seconds a depth/camera_info stamp may differ from its image's")
    bag.add_argument("--depth-noise", default="realsense_d415",
                     help="the depth camera's noise: realsense_d415, realsense_d435, realsense_d455 or "
                          "'SIGMA_AT_1M,EXPONENT[,QUANTUM]' in metres (default: %(default)s)")
    _add_model_arguments(bag)
    bag.set_defaults(run=run_bag)

    export = sub.add_parser(
        "export", help="export the network to ONNX (opset 17, no plugin ops) for onnxruntime / TensorRT 8.6, 10.x, 11.x",
        epilog=EXIT_CODES, formatter_class=formatter,
        description="Export the network to ONNX. The file imports in every TensorRT from 8.6 on (checked against each "
        "version's parser support) and in onnxruntime. Then the layers that must stay fp32 in an fp16 engine are measured "
        "on the sample photos (fp16 emulated on the CPU) and kept in the file, for `ovseg build-engine --precision fp16`.")
    export.add_argument("--size", required=True, type=_size, help="network input HxW, multiples of 32 (e.g. 480x640)")
    export.add_argument("--batch", type=int, default=1, help="images per forward pass (cameras batched together)")
    export.add_argument("--out", type=Path, required=True, help="output .onnx file")
    export.add_argument("--checkpoint")
    export.add_argument("--weights", choices=["checkpoint", "random"], default="checkpoint")
    export.add_argument("--model", choices=list(MODELS), default=None, help="default: the checkpoint's")
    export.add_argument("--variant", default=None, help="default: the checkpoint's")
    export.add_argument("--early-rejection-keep", type=int, default=0, metavar="N",
                        help="SED: category early rejection in static form, the N best classes go on after each of its "
                        "first 3 stages (vocabularies of at least N classes); default 0: none")
    export.add_argument("--early-rejection-topk", type=int, default=8, metavar="K",
                        help="SED: of those N, classes outside the top K at every pixel are masked out (default 8, SED's fast setting)")
    export.add_argument("--no-fp16-calibration", action="store_true",
                        help="skip measuring the fp32 layer set (the file then builds fp32 engines only)")
    export.set_defaults(run=run_export)

    build = sub.add_parser("build-engine", help="build (or reuse from the cache) a TensorRT engine from an exported ONNX",
                           epilog=EXIT_CODES, formatter_class=formatter)
    build.add_argument("onnx", type=Path)
    build.add_argument("--precision", choices=["fp16", "fp32"], default="fp16")
    build.add_argument("--min-rows", type=int, default=1, help="fewest text rows (classes x synonyms) the engine accepts")
    build.add_argument("--opt-rows", type=int, default=32, help="text rows the engine is tuned for")
    build.add_argument("--max-rows", type=int, default=512, help="most text rows the engine accepts")
    build.add_argument("--workspace-gib", type=float, default=4.0)
    build.add_argument("--cache-dir", type=Path, default=None, help="engine cache (default ~/.cache/ovseg_ros/engines)")
    build.add_argument("--force-rebuild", action="store_true")
    build.add_argument("--device", default="cuda")
    build.set_defaults(run=run_build_engine)

    check = sub.add_parser(
        "check-gpu", help="EOV-Seg S and FC-CLIP R50 on every backend of this machine: agreement with CPU fp32, latency",
        epilog=EXIT_CODES, formatter_class=formatter,
        description="Runs torch on the CPU (the reference), onnxruntime, torch on CUDA (fp32, fp16, CUDA graphs) and "
        "TensorRT (fp32 and fp16 engines, built here) on the same images; compares each with the reference and times "
        "the node's frame pipeline per stage. What cannot run here is listed as skipped. Exit 1 if a row is out of "
        "tolerance.")
    check.add_argument("--size", type=_size, default=(480, 640), help="camera image HxW (default: 480x640)")
    check.add_argument("--fixtures", type=Path, default=None,
                       help="parity fixture root (with eovseg_r50/, fcclip_r50/): their images and vocabularies; "
                       "default: the sample photos with the default vocabulary")
    check.add_argument("--eov-seg-checkpoint", default=None, help="EOV-Seg S checkpoint (default: stand-in random weights)")
    check.add_argument("--fc-clip-checkpoint", default=None, help="FC-CLIP R50 checkpoint (default: stand-in random weights)")
    check.add_argument("--models", nargs="+", choices=["eov_seg", "fc_clip"], default=None, help="default: both")
    check.add_argument("--iterations", type=int, default=50, help="timed frames per GPU row")
    check.add_argument("--cpu-iterations", type=int, default=3, help="timed frames per CPU row")
    check.add_argument("--warmup", type=int, default=5)
    check.add_argument("--work-dir", type=Path, default=None, help="exported files and engines (default: a temporary folder)")
    check.add_argument("--json", type=Path, help="also write the report here")
    check.set_defaults(run=run_check_gpu)

    bench = sub.add_parser("benchmark", help="latency per pipeline stage and end-to-end FPS (table + JSON)", epilog=EXIT_CODES,
                           formatter_class=formatter)
    bench.add_argument("--size", type=_size, default=(480, 640), help="camera image HxW (fed at this size)")
    bench.add_argument("--iterations", type=int, default=30)
    bench.add_argument("--warmup", type=int, default=3)
    bench.add_argument("--json", type=Path, help="also write the results here")
    _add_model_arguments(bench)
    bench.set_defaults(run=run_benchmark, classes=None, weights="random")
    bench.add_argument("--num-classes", dest="num_classes", type=int, default=24, help="vocabulary size (COCO names)")
    return parser


def make_predictor(args: argparse.Namespace):
    """The predictor for the model arguments, its vocabulary active; every cheap check
    (checkpoint file, vocabulary, device, engine file) before the model is built."""
    from ovseg_ros.predictor import Predictor

    if args.min_size < 0 or args.max_size < 32:
        raise UsageError("--min-size must be >= 0 and --max-size >= 32")
    config = InferenceConfig(min_size=args.min_size, max_size=args.max_size)
    predictor = Predictor.from_checkpoint(
        args.checkpoint, args.variant, args.device, config, stand_in_weights=args.weights == "random",
        backend=args.backend, engine_file=args.engine, fp16=args.fp16, cuda_graphs=args.cuda_graphs,
        classes=args.classes, things=args.things, model=args.model,
    )
    print(f"vocabulary: {predictor.vocabulary.describe()}", file=sys.stderr)
    return predictor


def image_paths(paths: list[Path]) -> list[Path]:
    """Files as given, folders expanded to their image files; missing paths are an input error."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"no such file or folder: {', '.join(missing)}")
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
            files += found
        else:
            files.append(path)
    return files


def summary(name: str, segments, seconds: float) -> str:
    """'street.jpg: 3 segments: car x2, road (1.8 s)'."""
    counts = Counter(s.label for s in segments)
    parts = ", ".join(f"{label} x{n}" if n > 1 else label for label, n in counts.most_common())
    return f"{name}: {len(segments)} segment{'s' if len(segments) != 1 else ''}{': ' + parts if parts else ''} ({seconds:.1f} s)"


def run_segment(args: argparse.Namespace) -> int:
    paths = image_paths(args.images)
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} is a file, not a folder")
    import cv2

    from ovseg_ros.decode import read_image_file
    from ovseg_ros.preprocess import ImageError
    from ovseg_ros.visualize import coco_panoptic_record, panoptic_to_rgb, render_overlay

    predictor = make_predictor(args)
    vocabulary = predictor.vocabulary
    args.out.mkdir(parents=True, exist_ok=True)
    annotations, failures = [], []
    for path in paths:
        start = time.perf_counter()
        try:
            rgb = read_image_file(path)
        except ImageError as exc:
            failures.append(path)
            print(f"error: {exc}; skipped", file=sys.stderr)
            continue
        result = predictor(rgb)
        png_name = f"{path.stem}_panoptic.png"
        cv2.imwrite(str(args.out / png_name), cv2.cvtColor(panoptic_to_rgb(result.panoptic), cv2.COLOR_RGB2BGR))
        record = coco_panoptic_record(png_name, result.segments, vocabulary.labels)
        record["image_file"] = str(path)
        record["height"], record["width"] = int(rgb.shape[0]), int(rgb.shape[1])
        (args.out / f"{path.stem}.json").write_text(json.dumps(record, indent=1))
        annotations.append(record)
        if not args.no_overlay:
            overlay = render_overlay(rgb, result.panoptic, result.segments, vocabulary.num_classes)
            cv2.imwrite(str(args.out / f"{path.stem}_overlay.jpg"), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        print(summary(path.name, result.segments, time.perf_counter() - start))
    seen = vocabulary.seen_in_training()
    categories = [
        {"id": i, "name": label, "synonyms": list(syn), "isthing": int(thing), "seen_in_training": seen[i]}
        for i, (label, syn, thing) in enumerate(zip(vocabulary.labels, vocabulary.classes, vocabulary.is_thing))
    ]
    (args.out / "panoptic.json").write_text(json.dumps({"annotations": annotations, "categories": categories}, indent=1))
    print(f"wrote {len(annotations)} result(s) to {args.out}/")
    if failures:
        print(f"error: {len(failures)} file(s) could not be read: {', '.join(map(str, failures))}", file=sys.stderr)
        return 1
    return 0


def run_bag(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ovseg_ros.bag import check_bag_inputs, process_bag
    from ovseg_ros.tracking import TrackerConfig

    if args.points and not args.depth_topic:
        raise UsageError("--points needs --depth-topic")
    check_bag_inputs(args.bag_in, args.out, args.topic, args.depth_topic, args.camera_info_topic)
    from ovseg_ros.depth import DepthNoise

    try:
        noise = DepthNoise.parse(args.depth_noise)
    except ValueError as exc:
        raise UsageError(f"--depth-noise: {exc}") from exc
    predictor = make_predictor(args)
    with tqdm(desc="frames", unit="frame", file=sys.stderr) as bar:
        report = process_bag(
            predictor, args.bag_in, args.out, args.topic, node_name=args.node_name, overlay=args.overlay,
            copy_input=not args.no_copy_input, vision_msgs_dir=args.vision_msgs, progress=bar.update,
            depth_topics=args.depth_topic, info_topics=args.camera_info_topic, points=args.points, slop=args.sync_slop,
            depth_noise=noise, tracking=None if args.no_tracking else TrackerConfig(),
        )
    in_3d = f", {report.frames_in_3d} in 3D" if args.depth_topic else ""
    print(f"{report.frames_out}/{report.frames_in} frames segmented ({report.dropped} dropped{in_3d}) -> {args.out}")
    for topic in report.topics_out:
        print(f"  {topic}")
    return 0 if report.dropped == 0 else 1


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must look like 480x640, got {text!r}") from exc
    return height, width


def run_export(args: argparse.Namespace) -> int:
    from ovseg_ros.onnx_export import check_export_size, export_onnx, text_row_shape
    from ovseg_ros.predictor import build_model_from, read_weights

    height, width = args.size
    weights = read_weights(args.checkpoint, args.variant, stand_in_weights=args.weights == "random", model=args.model)
    if weights.family != "sed":  # SED's input is its fixed 768 x 768, checked by export_onnx
        check_export_size(height, width)
    model = build_model_from(weights)
    path = export_onnx(model, args.out, height, width, batch=args.batch, early_rejection_keep=args.early_rejection_keep,
                       early_rejection_topk=args.early_rejection_topk)
    inputs = f"images [{args.batch}, 3, {height}, {width}]"
    if model.family in ("eov_seg", "sed"):
        inputs += f", text_embeddings [T, {', '.join(map(str, text_row_shape(model)))}]"
    print(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB): {inputs}")
    report_tensorrt_support(path)
    if not args.no_fp16_calibration:
        from ovseg_ros.fp16_calibration import calibrate_export

        found = calibrate_export(path, model)
        a = found.agreement
        print(f"fp16 layer set: {len(found.nodes)} nodes kept in fp32 ({len(found.overflow)} near fp16's range, "
              f"{len(found.modules)} modules that changed the result); fp16 vs fp32 on the sample photos: panoptic pixels "
              f"{100 * a.panoptic_pixels:.2f}%, semantic {100 * a.semantic_pixels:.2f}%, query classes "
              f"{100 * a.query_classes:.2f}%, mask IoU {100 * a.mask_iou:.2f}%")
    return 0


def report_tensorrt_support(path: Path) -> None:
    """One line per TensorRT version: would its ONNX parser take this file?"""
    import onnx

    from ovseg_ros.backends.tensorrt_support import PARSERS, check_graph

    proto = onnx.load(str(path))
    for name, parser in PARSERS.items():
        problems = check_graph(proto, parser)
        verdict = "imports as documented" if not problems else f"{len(problems)} problems, e.g. {problems[0]}"
        print(f"TensorRT {name}: {verdict}")


def run_check_gpu(args: argparse.Namespace) -> int:
    from ovseg_ros.check_gpu import run

    return run(args)


def run_build_engine(args: argparse.Namespace) -> int:
    from ovseg_ros.backends.tensorrt_engine import DEFAULT_CACHE, BuildConfig, build_engine

    if not args.onnx.is_file():
        raise FileNotFoundError(f"ONNX file not found: {args.onnx}")
    config = BuildConfig(
        precision=args.precision, min_text_rows=args.min_rows, opt_text_rows=args.opt_rows, max_text_rows=args.max_rows,
        workspace_gib=args.workspace_gib, cache_dir=args.cache_dir or DEFAULT_CACHE, force_rebuild=args.force_rebuild,
    )
    print(build_engine(args.onnx, config, args.device))
    return 0


def run_benchmark(args: argparse.Namespace) -> int:
    from ovseg_ros.benchmark import benchmark_vocabulary, run

    args.classes, args.things = benchmark_vocabulary(args.num_classes)
    args.min_size = 0
    return run(args, make_predictor(args))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    # usage and input errors: no checkpoint (MissingWeightsError), not a checkpoint (CheckpointError),
    # bad vocabulary (VocabularyError) are ValueErrors; a missing backend library is an ImportError
    except (FileNotFoundError, FileExistsError, NotImplementedError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
