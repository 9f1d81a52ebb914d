"""Checkpoint loading: official names, formats, and refusals that name the key."""

from __future__ import annotations

import pickle

import pytest
import torch

from ovseg_ros.checkpoint import CheckpointError, load_checkpoint, official_state_dict, official_to_ours, read_state_dict
from ovseg_ros.config import variant_config
from ovseg_ros.modeling import EOVSeg


@pytest.fixture(scope="module")
def official(stand_in_checkpoint):
    return read_state_dict(stand_in_checkpoint)


@pytest.fixture()
def fresh_model():
    return EOVSeg(variant_config("S"))


def test_unused_keys_are_skipped_knowingly(official, fresh_model, stand_in_checkpoint):
    skipped = load_checkpoint(fresh_model, stand_in_checkpoint)
    assert skipped and all(k.startswith(("vit_backbone.", "light_weight_decoder.criterion.")) for k in skipped)
    assert any(".resblocks.11." in k for k in skipped)
    assert official_to_ours("vit_backbone.clip_model.visual.transformer.resblocks.0.ln_1.weight") == "vit_stem.block.ln_1.weight"


def test_round_trip_through_official_names(official, fresh_model, tmp_path):
    from ovseg_ros.checkpoint import load_state_dict

    load_state_dict(fresh_model, official)
    saved = official_state_dict(fresh_model)
    assert set(saved) <= set(official)
    for name, tensor in saved.items():
        assert torch.equal(tensor, official[name]), name
    path = tmp_path / "ours.pth"
    torch.save(saved, path)  # a plain state dict
    other = EOVSeg(variant_config("S"))
    load_checkpoint(other, path)
    assert torch.equal(other.decoder.object_kernels.weight, fresh_model.decoder.object_kernels.weight)


def test_detectron2_pickle_with_numpy_arrays(official, fresh_model, tmp_path):
    path = tmp_path / "model.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in official.items()}, "__author__": "test"}, f)
    load_checkpoint(fresh_model, path)


def test_missing_key_is_named(official, fresh_model):
    from ovseg_ros.checkpoint import load_state_dict

    broken = dict(official)
    del broken["light_weight_decoder.vas.guide_fc.weight"]
    with pytest.raises(CheckpointError, match="light_weight_decoder.vas.guide_fc.weight"):
        load_state_dict(fresh_model, broken)


def test_shape_mismatch_names_both_shapes(official, fresh_model):
    from ovseg_ros.checkpoint import load_state_dict

    broken = dict(official)
    broken["lite_aggr.loc_conv.weight"] = torch.zeros(256, 131, 1, 1)
    with pytest.raises(CheckpointError, match=r"lite_aggr.loc_conv.weight: checkpoint \(256, 131, 1, 1\) vs model \(256, 130, 1, 1\)"):
        load_state_dict(fresh_model, broken)


def test_wrong_variant_is_refused(official):
    from ovseg_ros.checkpoint import load_state_dict

    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_state_dict(EOVSeg(variant_config("M")), official)


def test_unknown_key_is_refused(official, fresh_model):
    from ovseg_ros.checkpoint import load_state_dict

    broken = dict(official, **{"sem_seg_head.predictor.weight": torch.zeros(3)})
    with pytest.raises(CheckpointError, match="sem_seg_head.predictor.weight"):
        load_state_dict(fresh_model, broken)


def test_missing_and_garbage_files(tmp_path, fresh_model):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(fresh_model, tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(fresh_model, garbage)


@pytest.mark.parametrize("tower, width, deeper", [("RN101", 32, True), ("RN50x16", 48, False), ("RN50x64", 64, False)])
def test_fc_clip_zoo_towers_we_do_not_support_are_refused_by_name(tower, width, deeper):
    """FC-CLIP's model zoo also has R101, R50x16 and R50x64 checkpoints: a clear refusal,
    not 'not an EOV-Seg checkpoint' nor a list of missing keys."""
    from ovseg_ros.checkpoint import detect_model

    state = {
        "sem_seg_head.predictor.class_embed.layers.0.weight": torch.zeros(1),
        "backbone.clip_model.visual.conv1.weight": torch.zeros(width, 3, 3, 3),
        "backbone.clip_model.visual.layer3.0.conv1.weight": torch.zeros(1),
    }
    if deeper:
        state["backbone.clip_model.visual.layer3.10.conv1.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=f"FC-CLIP checkpoint with a CLIP {tower} image tower: not supported here"):
        detect_model(state)
    del state["backbone.clip_model.visual.conv1.weight"]
    state["backbone.clip_model.visual.conv1.weight"] = torch.zeros(32, 3, 3, 3)
    state.pop("backbone.clip_model.visual.layer3.10.conv1.weight", None)
    assert detect_model(state) == ("fc_clip", "R50")
