"""A longer CPU run than the smoke test: toy-width model on the synthetic shapes set,
validation PQ / mIoU every few hundred iterations. Results are recorded in the README.

    .venv/bin/python training/experiments/synthetic_run.py --iterations 1500 --json run.json
    .venv/bin/python training/experiments/synthetic_run.py --gkc --json run_gkc.json   # GKC's options on
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from ovseg_ros.config import InferenceConfig
from ovseg_ros.backends import TorchEngine
from ovseg_ros.predictor import Predictor
from ovseg_ros.vocabulary import TextEmbedder
from ovseg_training.config import DataConfig, LossConfig, OptimConfig, TrainConfig
from ovseg_training.data import PanopticDataset
from ovseg_training.evaluate import evaluate
from ovseg_training.synthetic import write_dataset
from ovseg_training.train import Trainer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--gkc", action="store_true", help="GKC's options as training/configs/coco_r50_gkc.json sets them")
    args = parser.parse_args()
    work = tempfile.TemporaryDirectory(prefix="ovseg_synthetic_")  # removed when the run ends
    root = write_dataset(Path(work.name) / "synthetic", num_train=200, num_val=40, size=64, seed=0)

    def split(name):
        return PanopticDataset(root / f"{name}.json", root / name / "images", root / name / "panoptic")

    config = TrainConfig(
        output_dir=str(root / "out"), variant="toy", checkpoint_every=0, seed=0,
        data=DataConfig(image_size=64, min_scale=0.8, max_scale=1.25, workers=0),
        loss=LossConfig(num_points=1024),
        optim=OptimConfig(lr=args.lr, batch_size=8, max_iter=args.iterations, steps=(int(args.iterations * 0.8),)),
    )
    if args.gkc:
        config.gkc = TrainConfig.from_file(Path(__file__).parents[1] / "configs" / "coco_r50_gkc.json").gkc
    torch.manual_seed(0)
    trainer = Trainer(config, split("train"))
    rows = []

    def record(losses):
        predictor = Predictor(TorchEngine(trainer.model.eval()), TextEmbedder(trainer.model.text_encoder), InferenceConfig(min_size=0))
        result = evaluate(predictor, split("val"))
        row = {"iteration": trainer.iteration, "train_loss": sum(losses) / len(losses) if losses else None,
               "PQ": result["All"]["pq"], "PQ_th": result["Things"]["pq"], "PQ_st": result["Stuff"]["pq"], "mIoU": result["mIoU"]}
        rows.append(row)
        print(json.dumps(row), flush=True)

    record([])
    start = time.time()
    while trainer.iteration < args.iterations:
        history = trainer.train(args.every, progress=False)
        record([h["loss"] for h in history])
    summary = {"seconds": time.time() - start, "machine_threads": torch.get_num_threads(), "rows": rows, "config": config.to_dict()}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
