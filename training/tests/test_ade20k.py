"""ADE20K -> COCO panoptic (ovseg-prepare-ade20k) on a small ADEChallengeData2016-format
sample the test writes, and the published class names."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from ovseg_training.ade20k import ADE20K_CLASSES, INSTANCE_CLASS, main
from ovseg_training.data import PanopticDataset, read_panoptic_png

WALL, FLOOR, PERSON, CHAIR = 0, 3, 12, 19  # 150-class indices
PERSON_INSTANCE = next(k for k, v in INSTANCE_CLASS.items() if v == PERSON)
CHAIR_INSTANCE = next(k for k, v in INSTANCE_CLASS.items() if v == CHAIR)


def test_the_published_names_and_things():
    assert len(ADE20K_CLASSES) == 150 and sum(thing for _, thing in ADE20K_CLASSES) == 100
    assert ADE20K_CLASSES[WALL] == ("wall,walls,brick wall,stone wall,interior wall", False)
    assert ADE20K_CLASSES[PERSON][0].startswith("person,child,girl") and ADE20K_CLASSES[PERSON][1]
    assert ADE20K_CLASSES[149][0] == "flag,flags"
    assert set(INSTANCE_CLASS.values()) == {i for i, (_, thing) in enumerate(ADE20K_CLASSES) if thing}


def write_sample(root):
    """Two images: wall over floor, a person and a chair (instances), a person-class
    pixel block without an instance (void), pixels of no class (void)."""
    for folder in ("images/validation", "annotations/validation", "annotations_instance/validation"):
        (root / folder).mkdir(parents=True)
    truth = []
    for index in range(2):
        stem = f"ADE_val_{index + 1:08d}"
        semantic = np.zeros((40, 60), np.uint8)
        semantic[:20] = WALL + 1
        semantic[20:] = FLOOR + 1
        semantic[35:, 50:] = 0  # no class
        instance = np.zeros((40, 60, 3), np.uint8)
        semantic[5:25, 5:15] = PERSON + 1
        instance[5:25, 5:15] = (PERSON_INSTANCE + 1, 1, 0)
        semantic[10:30, 30 + index: 40 + index] = CHAIR + 1
        instance[10:30, 30 + index: 40 + index] = (CHAIR_INSTANCE + 1, 2, 0)
        semantic[2:4, 50:55] = PERSON + 1  # a thing class without an instance: void
        cv2.imwrite(str(root / "images/validation" / f"{stem}.jpg"), np.full((40, 60, 3), 100, np.uint8))
        cv2.imwrite(str(root / "annotations/validation" / f"{stem}.png"), semantic)
        cv2.imwrite(str(root / "annotations_instance/validation" / f"{stem}.png"), cv2.cvtColor(instance, cv2.COLOR_RGB2BGR))
        truth.append((stem, semantic, instance))
    return truth


def test_converter_writes_coco_panoptic_as_the_published_script_does(tmp_path, capsys):
    root = tmp_path / "ADEChallengeData2016"
    truth = write_sample(root)
    assert main([str(root)]) == 0
    spec = json.loads((root / "ade20k_panoptic_val.json").read_text())
    assert [c["id"] for c in spec["categories"]] == list(range(150))
    assert [i["id"] for i in spec["images"]] == [stem for stem, *_ in truth]
    for (stem, semantic, instance), record in zip(truth, spec["annotations"]):
        assert record["image_id"] == stem and record["file_name"] == f"{stem}.png"
        ids = read_panoptic_png(root / "ade20k_panoptic_val" / record["file_name"])
        by_category = {}
        for s in record["segments_info"]:
            by_category.setdefault(s["category_id"], []).append(s)
        assert sorted(by_category) == [WALL, FLOOR, PERSON, CHAIR] and all(len(v) == 1 for v in by_category.values())
        person, chair, wall = by_category[PERSON][0], by_category[CHAIR][0], by_category[WALL][0]
        assert (ids == person["id"]).sum() == person["area"] == 200 and (ids == chair["id"]).sum() == 200
        assert person["bbox"] == [5, 5, 10, 20]
        assert (ids[2:4, 50:55] == 0).all(), "a thing class without an instance is void"
        assert (ids[35:, 50:] == 0).all(), "no class is void"
        # stuff area as the published script writes it: before the things were pasted over it
        assert wall["area"] == int((semantic == WALL + 1).sum())  # no thing lies on the wall here
    dataset = PanopticDataset(root / "ade20k_panoptic_val.json", root / "images/validation", root / "ade20k_panoptic_val",
                              class_names="ade20k_published")
    assert dataset.class_names[PERSON].startswith("person,child") and dataset.thing_classes[PERSON]
    image, ids, segments = dataset.load(0)
    assert image.shape == (40, 60, 3) and len(segments) == 4


def test_stuff_area_is_the_one_before_things_are_pasted(tmp_path):
    """The published script computes a stuff segment's area before pasting things over
    it (panopticapi then takes that area for the union): so does ours."""
    from ovseg_training.ade20k import convert_image

    semantic = np.full((10, 10), WALL + 1, np.uint8)
    instance = np.zeros((10, 10, 3), np.uint8)
    instance[:5, :5] = (PERSON_INSTANCE + 1, 1, 0)  # a person instance over wall-labelled pixels
    panoptic, segments = convert_image(semantic, instance)
    wall = next(s for s in segments if s["category_id"] == WALL)
    assert wall["area"] == 100 and (panoptic == wall["id"]).sum() == 75


def test_bad_inputs_are_refused_clearly(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "annotations_instance" in capsys.readouterr().err
    root = tmp_path / "ADEChallengeData2016"
    write_sample(root)
    bad = np.zeros((40, 60, 3), np.uint8)
    bad[:5, :5] = (200, 3, 0)  # instance class 200: none of 1..100
    cv2.imwrite(str(root / "annotations_instance/validation/ADE_val_00000001.png"), cv2.cvtColor(bad, cv2.COLOR_RGB2BGR))
    assert main([str(root)]) == 2
    err = capsys.readouterr().err
    assert "ADE_val_00000001" in err and "instance classes [200]" in err
    with pytest.raises(ValueError, match="differ in size"):
        from ovseg_training.ade20k import convert_image

        convert_image(np.zeros((4, 4), np.uint8), np.zeros((5, 4, 3), np.uint8))


def test_zero_shot_evaluation_config_runs_on_the_converted_split(tmp_path):
    """training/configs/eval_ade20k.json's settings, pointed at the sample: the published
    names (150 classes, their synonyms), the published test settings, every category scored."""
    import torch
    from ovseg_training.config import EvalConfig, TrainConfig
    from ovseg_training.evaluate import main as evaluate_main
    from ovseg_training.train import build_model

    from ovseg_ros.checkpoint import official_state_dict

    shipped = EvalConfig.from_file(__import__("pathlib").Path(__file__).resolve().parents[1] / "configs" / "eval_ade20k.json")
    assert shipped.class_names == "ade20k_published" and shipped.inference["min_size"] == 640
    root = tmp_path / "ADEChallengeData2016"
    write_sample(root)
    assert main([str(root)]) == 0
    config = {**shipped.__dict__, "annotations": str(root / "ade20k_panoptic_val.json"),
              "images": str(root / "images/validation"), "panoptic_masks": str(root / "ade20k_panoptic_val"),
              "inference": {**shipped.inference, "min_size": 64}}
    (tmp_path / "eval.json").write_text(json.dumps(config))
    checkpoint = tmp_path / "toy.pth"
    torch.manual_seed(0)
    torch.save({"model": official_state_dict(build_model(TrainConfig(variant="toy")))}, checkpoint)
    out = tmp_path / "scores.json"
    assert evaluate_main(["--config", str(tmp_path / "eval.json"), "--checkpoint", str(checkpoint), "--variant", "toy",
                          "--device", "cpu", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["unit"] == "percent" and result["images"] == 2 and len(result["per_category"]) == 150
    assert result["per_category"][PERSON]["name"].startswith("person,child")
