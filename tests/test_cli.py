"""`ovseg segment` end to end with stand-in weights."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from ovseg_ros.cli import main
from ovseg_ros.visualize import rgb_to_panoptic

ASSETS = Path(__file__).resolve().parents[1] / "src" / "ovseg_ros" / "assets"


def test_refuses_without_checkpoint(tmp_path, capsys):
    assert main(["segment", str(ASSETS / "street.jpg"), "--out", str(tmp_path)]) == 2
    assert "no checkpoint given" in capsys.readouterr().err


def test_segment_writes_coco_panoptic(tmp_path, capsys):
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), cv2.resize(cv2.imread(str(ASSETS / "street.jpg")), (160, 120)))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    code = main([
        "segment", str(small), str(broken), "--weights", "random", "--out", str(out), "--min-size", "96",
        "--classes", "person; car, automobile; road; sky", "--things", "person; car",
    ])
    captured = capsys.readouterr()
    assert code == 1 and "broken.jpg" in captured.err  # the bad file is reported, the good one kept
    record = json.loads((out / "small.json").read_text())
    panoptic = rgb_to_panoptic(cv2.cvtColor(cv2.imread(str(out / record["file_name"])), cv2.COLOR_BGR2RGB))
    assert panoptic.shape == (120, 160)
    assert set(np.unique(panoptic).tolist()) - {0} <= {s["id"] for s in record["segments_info"]}
    for s in record["segments_info"]:
        assert s["area"] == int((panoptic == s["id"]).sum())
    assert (out / "small_overlay.jpg").is_file()
    summary = json.loads((out / "panoptic.json").read_text())
    assert [c["name"] for c in summary["categories"]] == ["person", "car", "road", "sky"]
