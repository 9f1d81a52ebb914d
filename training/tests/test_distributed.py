"""The same entry point under torchrun: two CPU processes (gloo) train with DDP, and
rank 0 writes a checkpoint the predictor loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_torchrun_two_processes(synthetic_root, tmp_path):
    config = {
        "output_dir": str(tmp_path / "out"), "variant": "toy", "checkpoint_every": 0, "seed": 0,
        "data": {"root": str(synthetic_root), "annotations": "train.json", "images": "train/images",
                 "panoptic_masks": "train/panoptic", "image_size": 64, "workers": 0},
        "loss": {"num_points": 512},
        "optim": {"batch_size": 4, "max_iter": 3, "steps": [100], "lr": 1e-3},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "ovseg_training.train", "--config", str(path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = tmp_path / "out" / "model_0000003.pth"
    assert checkpoint.is_file()

    from ovseg_ros.config import InferenceConfig
    from ovseg_ros.predictor import Predictor

    Predictor.from_checkpoint(checkpoint, variant="toy", config=InferenceConfig(min_size=0))
