"""`ovseg` as a new user meets it: results with stand-in weights, and every mistake
reported with a clear message and exit code 2 before any model is built."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from ovseg_ros.cli import main
from ovseg_ros.visualize import rgb_to_panoptic

ASSETS = Path(__file__).resolve().parents[1] / "src" / "ovseg_ros" / "assets"
STREET = str(ASSETS / "street.jpg")


def small_image(tmp_path: Path, name: str = "small.png") -> Path:
    path = tmp_path / name
    cv2.imwrite(str(path), cv2.resize(cv2.imread(STREET), (160, 120)))
    return path


def test_segment_writes_coco_panoptic_and_a_summary(tmp_path, capsys):
    small = small_image(tmp_path)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    truncated = tmp_path / "truncated.jpg"
    ok, jpeg = cv2.imencode(".jpg", cv2.imread(STREET))
    truncated.write_bytes(jpeg.tobytes()[: len(jpeg) // 2])  # libjpeg would only warn
    out = tmp_path / "out"
    code = main([
        "segment", str(small), str(broken), str(truncated), "--weights", "random", "--out", str(out), "--min-size", "96",
        "--classes", "person; car, automobile; road; sky;",
    ])
    captured = capsys.readouterr()
    assert code == 1, captured.err  # the bad files are reported, the good one kept
    assert "broken.jpg" in captured.err and "truncated.jpg" in captured.err and "damaged" in captured.err
    assert "things (inferred): person, car" in captured.err
    assert "small.png: " in captured.out and "segment" in captured.out
    assert not (out / "truncated.json").exists()
    record = json.loads((out / "small.json").read_text())
    panoptic = rgb_to_panoptic(cv2.cvtColor(cv2.imread(str(out / record["file_name"])), cv2.COLOR_BGR2RGB))
    assert panoptic.shape == (120, 160)
    assert record["segments_info"], "stand-in weights still give visible segments"
    assert set(np.unique(panoptic).tolist()) - {0} == {s["id"] for s in record["segments_info"]}
    for s in record["segments_info"]:
        assert s["area"] == int((panoptic == s["id"]).sum())
    assert (out / "small_overlay.jpg").is_file()
    summary = json.loads((out / "panoptic.json").read_text())
    assert [c["name"] for c in summary["categories"]] == ["person", "car", "road", "sky"]
    assert [c["isthing"] for c in summary["categories"]] == [1, 1, 0, 0]
    assert [c["seen_in_training"] for c in summary["categories"]] == [True, True, True, True]


def test_folders_are_expanded(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    small_image(folder, "a.jpg")
    small_image(folder, "b.png")
    (folder / "notes.txt").write_text("not an image")
    assert main(["segment", str(folder), "--weights", "random", "--min-size", "64", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "a.jpg: " in out and "b.png: " in out and "notes" not in out


@pytest.fixture()
def no_model_built(monkeypatch):
    """Fails the test if a model is constructed: errors must come before that."""
    import ovseg_ros.predictor

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the error was reported")

    monkeypatch.setattr(ovseg_ros.predictor, "EOVSeg", refuse)


def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a checkpoint\n")
    return path


USAGE_ERRORS = [
    (lambda t: ["segment", "missing.jpg", "--weights", "random"], "no such file or folder: missing.jpg"),
    (lambda t: ["segment", STREET], "no checkpoint given"),
    (lambda t: ["segment", STREET, "--checkpoint", str(text_file(t))], "not an EOV-Seg checkpoint: "),
    (lambda t: ["segment", STREET, "--checkpoint", str(t / "nope.pth")], "checkpoint not found"),
    (lambda t: ["segment", STREET, "--checkpoint", str(text_file(t)), "--weights", "random"], "not both"),
    (lambda t: ["segment", STREET, "--weights", "random", "--classes", "person; Person"], "appears in classes 0 and 1"),
    (lambda t: ["segment", STREET, "--weights", "random", "--classes", "person", "--things", "dog"], "thing 'dog' is not one of the classes"),
    (lambda t: ["segment", STREET, "--weights", "random", "--classes", "word " * 80], "too long"),
    (lambda t: ["segment", STREET, "--weights", "random", "--variant", "XL"], "unknown EOV-Seg variant"),
    (lambda t: ["segment", STREET, "--weights", "random", "--device", "cuda:7"], "cuda:7"),
    (lambda t: ["segment", STREET, "--weights", "random", "--backend", "onnxruntime", "--engine", str(t / "x.onnx")], "engine file not found"),
    (lambda t: ["bag", str(t / "no_bag"), "--topic", "/a", "--out", str(t / "o"), "--weights", "random"], "input bag not found"),
    (lambda t: ["export", "--size", "480x641", "--out", str(t / "m.onnx"), "--weights", "random"], "multiples of 32"),
    (lambda t: ["build-engine", str(t / "m.onnx")], "ONNX file not found"),
]


@pytest.mark.parametrize("args, message", USAGE_ERRORS)
def test_usage_and_input_errors_come_first_with_exit_code_2(args, message, tmp_path, capsys, no_model_built):
    start = time.monotonic()
    code = main(args(tmp_path))
    seconds = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert "Traceback" not in err
    assert seconds < 10, f"{seconds:.1f} s before the error"


def test_wrong_variant_names_the_right_one(stand_in_checkpoint, capsys, no_model_built):
    code = main(["segment", STREET, "--checkpoint", str(stand_in_checkpoint), "--variant", "M"])
    err = capsys.readouterr().err
    assert code == 2 and "the checkpoint is EOV-Seg S (RN50 CLIP), not EOV-Seg M" in err and "--variant S" in err


def test_bag_inputs_are_checked_first(tmp_path, capsys, no_model_built, typestore):
    from rosbags.rosbag2 import Writer

    bag = tmp_path / "in"
    with Writer(bag, version=8) as writer:
        writer.add_connection("/front/image_raw", "sensor_msgs/msg/Image", typestore=typestore)
        writer.add_connection("/odom", "std_msgs/msg/String", typestore=typestore)
    (tmp_path / "exists").mkdir()
    for out, topic, message in (
        ("exists", "/front/image_raw", "exists already"),
        ("o", "/rear/image_raw", "topic(s) not in the bag: /rear/image_raw; image topics there: /front/image_raw"),
        ("o", "/odom", "not an image type"),
    ):
        code = main(["bag", str(bag), "--topic", topic, "--out", str(tmp_path / out), "--weights", "random"])
        err = capsys.readouterr().err
        assert code == 2 and message in err, err


def test_help_shows_the_default_vocabulary_and_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "person; forklift; pallet" in text and "exit codes" in text
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    text = capsys.readouterr().out
    assert "image files (JPEG, PNG, ...)" in text and "default: the classes with a COCO thing name" in text
