"""The published recipe, setting by setting (training/README.md's table): AdamW's parameter
groups, the initialisation, the large-scale jitter, the training class names and images
without segments."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ovseg_training.config import TrainConfig
from ovseg_training.data import LargeScaleJitter, PanopticDataset
from ovseg_training.init import initialize_like_published
from ovseg_training.train import build_model, parameter_groups
from torch import nn

from ovseg_ros.config import variant_config
from ovseg_ros.modeling import EOVSeg


@pytest.fixture(scope="module")
def model():
    return build_model(TrainConfig(variant="toy"))


def test_weight_decay_is_zero_for_norms_and_embeddings_only(model):
    groups = parameter_groups(model, 0.05)
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert set(decay_of) == {id(p) for p in model.parameters() if p.requires_grad}, "every trainable parameter, once"
    assert not any(id(p) in decay_of for n, p in named.items() if n.startswith(("image_encoder", "text_encoder", "vit_stem")))
    zero = {n for n, p in named.items() if decay_of.get(id(p)) == 0.0}
    assert {"void_embedding", "decoder.object_kernels.weight"} <= zero
    assert "neck.deform_conv1.dcn_bn.weight" in zero and "neck.deform_conv1.dcn_bn.bias" in zero  # BatchNorm
    assert "decoder.mask_heads.0.ffn_norm.weight" in zero  # LayerNorm
    assert "decoder.vas.embed_conv.pointwise.norm.weight" in zero
    # as published: biases, the custom 2D LayerNorm, logit scales and VAS's scale decay
    for name in ("decoder.mask_heads.0.fc_mask.bias", "decoder.output_upscaling.1.weight", "decoder.mask_heads.0.logit_scale",
                 "decoder.vas.scale", "neck.bias"):
        assert decay_of[id(named[name])] == 0.05, name


def test_initialisation_statistics():
    torch.manual_seed(0)
    model = EOVSeg(variant_config("S"))  # full widths: statistics over many weights
    initialize_like_published(model)
    neck = model.neck
    weight = neck.lateral_conv0.weight  # xavier uniform: bound sqrt(6 / (fan_in + fan_out))
    fan_in, fan_out = weight.shape[1], weight.shape[0]
    assert weight.abs().max() <= np.sqrt(6 / (fan_in + fan_out)) + 1e-6
    assert weight.std().item() == pytest.approx(np.sqrt(2 / (fan_in + fan_out)), rel=0.05)
    offsets = neck.deform_conv1.dcn_offset
    assert offsets.weight.abs().sum() > 0, "xavier overrides the zero offset weights"
    assert (offsets.bias == 0).all()
    linear = model.decoder.mask_heads[0].fc_mask
    assert linear.weight.std().item() == pytest.approx(0.02, rel=0.1) and linear.weight.abs().max() <= 2.0
    assert (linear.bias == 0).all() and (model.decoder.mask_heads[2].ffn.layers[1].bias == 0).all()
    pointwise = model.decoder.vas.embed_conv.pointwise.weight  # MSRA: std sqrt(2 / fan_out)
    assert pointwise.std().item() == pytest.approx(np.sqrt(2 / pointwise.shape[0]), rel=0.05)
    assert model.void_embedding.std().item() == pytest.approx(1.0, rel=0.1)
    assert model.decoder.object_kernels.weight.std().item() == pytest.approx(1.0, rel=0.05)


def test_fine_tuning_keeps_the_checkpoint(tmp_path):
    """Initialisation is for training from the towers; an init_checkpoint is loaded as it is."""
    from ovseg_ros.checkpoint import official_state_dict

    source = build_model(TrainConfig(variant="toy"))
    path = tmp_path / "start.pth"
    torch.save({"model": official_state_dict(source)}, path)
    again = build_model(TrainConfig(variant="toy", init_checkpoint=str(path)))
    assert torch.equal(again.neck.lateral_conv0.weight, source.neck.lateral_conv0.weight)


def checkerboard_scene(size=64):
    image = (np.indices((size, size)).sum(0) % 2 * 255).astype(np.uint8)[..., None].repeat(3, -1)
    ids = np.zeros((size, size), np.int32)
    ids[:, : size // 4] = 7  # a segment on the left quarter
    ids[:, size // 4:] = 9
    return image, ids


def test_jitter_flips_first_pads_grey_at_the_bottom_right_and_antialiases():
    image, ids = checkerboard_scene(128)
    seen_flip = False
    for seed in range(40):
        out_image, out_ids = LargeScaleJitter(128, 0.5, 0.5, seed=seed)(image, ids)  # 128 px -> 64 of 128: padded
        assert out_image.shape == (128, 128, 3) and out_ids.shape == (128, 128)
        assert (out_image[64:] == 128).all() and (out_image[:, 64:] == 128).all(), "padding is grey, bottom and right"
        assert (out_ids[64:] == 0).all() and (out_ids[:, 64:] == 0).all(), "padded labels are no segment"
        # a 1-pixel checkerboard shrunk 2x averages to grey when antialiased (cv2's
        # bilinear without antialiasing samples it: black or white)
        assert np.abs(out_image[:64, :64].astype(float) - 127.5).max() < 40
        seen_flip |= bool((out_ids[:64, :16] == 9).all() and (out_ids[:64, 48:64] == 7).all())
    assert seen_flip, "the flip happens before the padding: the flipped scene stays top-left"


def test_jitter_crops_with_one_draw_and_keeps_emptied_segments(tmp_path):
    image, ids = checkerboard_scene(200)
    ids[:, :6] = 3  # a thin strip that a crop removes
    for seed in range(30):
        _, out_ids = LargeScaleJitter(100, 1.0, 1.0, flip=False, seed=seed)(image, ids)
        assert out_ids.shape == (100, 100)
    root = synthetic_like(tmp_path, ids)
    dataset = PanopticDataset(root / "d.json", root / "images", root / "panoptic",
                              transform=LargeScaleJitter(100, 1.0, 1.0, flip=False, seed=1))
    item = dataset[0]
    assert item["masks"].shape[0] == 3, "a segment the crop empties stays, with an empty mask"


def synthetic_like(root, ids):
    """A one-image COCO-panoptic dataset of `ids` (categories 3, 7, 9) and an image."""
    import cv2

    from ovseg_ros.visualize import panoptic_to_rgb

    (root / "images").mkdir()
    (root / "panoptic").mkdir()
    cv2.imwrite(str(root / "images" / "a.jpg"), np.full((*ids.shape, 3), 90, np.uint8))
    cv2.imwrite(str(root / "panoptic" / "a.png"), cv2.cvtColor(panoptic_to_rgb(ids), cv2.COLOR_RGB2BGR))
    segments = [{"id": i, "category_id": i, "iscrowd": 0, "area": int((ids == i).sum())} for i in (3, 7, 9)]
    spec = {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": segments}],
            "categories": [{"id": i, "name": f"class {i}", "isthing": 1} for i in (3, 7, 9)]}
    (root / "d.json").write_text(json.dumps(spec))
    return root


def test_coco_panoptic_trains_with_the_published_names(tmp_path):
    """A dataset with COCO panoptic's categories gets the published prompt-engineered
    names and synonyms ("person, child, girl, ..."), not the JSON's "wall-other-merged"."""
    from ovseg_ros.coco_classes import COCO_PANOPTIC_CLASSES, PUBLISHED_NAMES

    root = synthetic_like(tmp_path, np.full((8, 8), 3, np.int32))
    spec = json.loads((root / "d.json").read_text())
    spec["categories"] = [{"id": i, "name": f"json-name-{i}", "isthing": int(t)} for i, t, _ in COCO_PANOPTIC_CLASSES]
    (root / "coco.json").write_text(json.dumps(spec))
    dataset = PanopticDataset(root / "coco.json", root / "images", root / "panoptic")
    assert dataset.class_names_source == "coco_published"
    assert dataset.class_names[0] == PUBLISHED_NAMES[1] and dataset.class_names[0].startswith("person,child,girl")
    rows = sum(len(n.split(",")) for n in dataset.class_names)
    assert 250 <= rows <= 260, rows  # about 250 text rows, best synonym per class
    assert PanopticDataset(root / "coco.json", root / "images", root / "panoptic", class_names="json").class_names[0] == "json-name-1"
    own = PanopticDataset(root / "d.json", root / "images", root / "panoptic")
    assert own.class_names_source == "json" and own.class_names == ["class 3", "class 7", "class 9"]
    spec["categories"] = [{"id": 12, "name": "not in COCO", "isthing": 1}]  # COCO panoptic has no id 12
    (root / "other.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="published list"):
        PanopticDataset(root / "other.json", root / "images", root / "panoptic", class_names="coco_published")


def test_images_without_segments_are_kept(synthetic_root, tmp_path):
    spec = json.loads((synthetic_root / "val.json").read_text())
    spec["annotations"][0]["segments_info"] = []
    path = tmp_path / "val.json"
    path.write_text(json.dumps(spec))
    dataset = PanopticDataset(path, synthetic_root / "val" / "images", synthetic_root / "val" / "panoptic")
    assert len(dataset) == 12
    assert dataset[0]["masks"].shape[0] == 0 and dataset[0]["labels"].shape == (0,)


def test_the_recipe_config_is_the_published_one():
    config = TrainConfig.from_file(Path(__file__).resolve().parents[1] / "configs" / "coco_r50.json")
    o, d, loss = config.optim, config.data, config.loss
    assert (o.lr, o.weight_decay, o.weight_decay_norm, o.weight_decay_embed, o.clip_grad_norm) == (1e-4, 0.05, 0.0, 0.0, 0.01)
    assert (o.steps, o.gamma, o.max_iter, o.batch_size) == ((163889, 187546), 0.1, 200_000, 16)
    assert (d.image_size, d.min_scale, d.max_scale, d.flip, d.class_names) == (1024, 0.1, 2.0, True, "auto")
    assert (loss.class_weight, loss.mask_weight, loss.dice_weight, loss.no_object_weight) == (2.0, 5.0, 5.0, 0.1)
    assert (loss.num_points, loss.oversample_ratio, loss.importance_sample_ratio) == (12544, 3.0, 0.75)


def test_nn_modules_used_as_norms_are_the_detectron2_list():
    from ovseg_training.train import NORM_LAYERS

    assert nn.LayerNorm in NORM_LAYERS and nn.SyncBatchNorm in NORM_LAYERS and nn.GroupNorm in NORM_LAYERS
