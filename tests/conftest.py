"""Shared fixtures: the parity folder and a model holding the deterministic stand-in
weights of ../shared/parity/weights.py, loaded through the user-facing checkpoint loader."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PARITY_DIR = REPO.parent / "shared" / "parity" / "eovseg_r50"


def parity_dir() -> Path:
    return Path(os.environ.get("OVSEG_PARITY_DIR", DEFAULT_PARITY_DIR))


def _load_weights_module(folder: Path):
    candidates = [folder / "weights.py", folder.parent / "weights.py"]
    for path in candidates:
        if path.is_file():
            spec = importlib.util.spec_from_file_location("parity_weights", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise FileNotFoundError(f"weights.py not found next to {folder}")


@pytest.fixture(scope="session")
def parity_folder() -> Path:
    folder = parity_dir()
    if not (folder / "cases.json").is_file():
        pytest.fail(f"parity fixtures missing: {folder}/cases.json (set OVSEG_PARITY_DIR)")
    return folder


@pytest.fixture(scope="session")
def parity_cases(parity_folder) -> list[dict]:
    return json.loads((parity_folder / "cases.json").read_text())


@pytest.fixture(scope="session")
def stand_in_checkpoint(parity_folder, tmp_path_factory) -> Path:
    """A detectron2-format file ({"model": state_dict}) of the stand-in weights."""
    module = _load_weights_module(parity_folder)
    spec_file = next(parity_folder.glob("*_state_dict_spec.json"))
    spec = json.loads(spec_file.read_text())["tensors"]
    path = tmp_path_factory.mktemp("ckpt") / "eovseg_r50_stand_in.pth"
    torch.save({"model": module.make_state_dict(spec), "iteration": 0}, path)
    return path


@pytest.fixture(scope="session")
def parity_model(stand_in_checkpoint):
    from ovseg_ros.predictor import build_model

    return build_model(stand_in_checkpoint, "S")


@pytest.fixture()
def one_thread():
    """Pin intra-op threads: the reference's own noise depends on the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model():
    from ovseg_ros.config import toy_config
    from ovseg_ros.modeling import EOVSeg
    from ovseg_ros.predictor import _randomize

    torch.manual_seed(0)
    model = EOVSeg(toy_config()).eval()
    _randomize(model)
    return model


@pytest.fixture()
def tiny_predictor(tiny_model):
    from ovseg_ros.config import InferenceConfig
    from ovseg_ros.engine import TorchEngine
    from ovseg_ros.predictor import Predictor
    from ovseg_ros.vocabulary import TextEmbedder

    predictor = Predictor(TorchEngine(tiny_model), TextEmbedder(tiny_model.text_encoder), InferenceConfig(min_size=0))
    predictor.set_vocabulary("person; forklift, fork lift; pallet; floor; wall", "person; forklift; pallet")
    return predictor


@pytest.fixture(scope="session")
def typestore():
    """rosbags' Humble types + ovseg_msgs + vision_msgs from ../shared/ros_interfaces."""
    from ovseg_ros.interfaces import rosbags_typestore

    vision = REPO.parent / "shared" / "ros_interfaces" / "vision_msgs"
    store, has_vision = rosbags_typestore(vision)
    assert has_vision, f"vision_msgs definitions expected in {vision}"
    return store
