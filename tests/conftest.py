"""Shared fixtures: the parity fixture folders and models holding the deterministic
stand-in weights of ../shared/parity/weights.py, loaded through the user-facing
checkpoint loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from support import REPO, load_cases, parity_folder_named, write_stand_in_checkpoint


@pytest.fixture(scope="session")
def parity_folder() -> Path:
    """The EOV-Seg S fixtures, which the other tests (ONNX, checkpoints, GPU) build on."""
    return parity_folder_named("eovseg_r50")


@pytest.fixture(scope="session")
def parity_cases(parity_folder) -> list[dict]:
    return load_cases(parity_folder)


@pytest.fixture(scope="session")
def stand_in_checkpoint(parity_folder, tmp_path_factory) -> Path:
    return write_stand_in_checkpoint(parity_folder, tmp_path_factory.mktemp("ckpt") / "eovseg_r50_stand_in.pth")


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
    from ovseg_ros.backends import TorchEngine
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
