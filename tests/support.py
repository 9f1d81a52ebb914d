"""Helpers shared by test modules (conftest.py holds the fixtures)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch


def make_header(typestore, sec: int = 12, nanosec: int = 345, frame_id: str = "camera_optical"):
    Time = typestore.types["builtin_interfaces/msg/Time"]
    Header = typestore.types["std_msgs/msg/Header"]
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def make_camera_info(typestore, header, height: int, width: int, fx: float = 500.0, fy: float = 500.0):
    types = typestore.types
    roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    k = np.array([fx, 0, width / 2, 0, fy, height / 2, 0, 0, 1], dtype=np.float64)
    p = np.array([fx, 0, width / 2, 0, 0, fy, height / 2, 0, 0, 0, 1, 0], dtype=np.float64)
    return types["sensor_msgs/msg/CameraInfo"](
        header=header, height=height, width=width, distortion_model="plumb_bob", d=np.zeros(5), k=k,
        r=np.eye(3).reshape(-1), p=p, binning_x=0, binning_y=0, roi=roi,
    )


# --- parity fixtures ---------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PARITY_ROOT = REPO.parent / "shared" / "parity"
DEFAULT_SEMANTIC_PARITY_ROOT = REPO.parent / "shared" / "parity_semantic"

# fixture folder name -> (model family, variant) of the published code it was made with
PARITY_MODELS = {
    "eovseg_r50": ("eov_seg", "S"),
    "eovseg_r50x4": ("eov_seg", "M"),
    "eovseg_convnext_l": ("eov_seg", "L"),
    "fcclip_r50": ("fc_clip", "R50"),
    "fcclip_convnext_l": ("fc_clip", "L"),
    "san_vit_b16": ("san", "B"),
    "san_vit_l14": ("san", "L"),
    "sed_convnext_b": ("sed", "B"),
    "sed_convnext_l": ("sed", "L"),
}
PANOPTIC_FAMILIES = ("eov_seg", "fc_clip")


def parity_roots() -> list[Path]:
    """$OVSEG_PARITY_DIR (one fixture folder, or a folder of them), else both default
    roots (../shared/parity and ../shared/parity_semantic)."""
    named = os.environ.get("OVSEG_PARITY_DIR")
    return [Path(named)] if named else [DEFAULT_PARITY_ROOT, DEFAULT_SEMANTIC_PARITY_ROOT]


def parity_folders(families: tuple[str, ...] | None = None) -> list[Path]:
    """The fixture folders to test: the one named, or every one under the roots; with
    `families`, those of these model families (a folder of an unknown name counts as
    panoptic, so that its test fails). By default an empty selection is returned as the
    root itself, whose test then fails (never skips); a folder named in $OVSEG_PARITY_DIR
    leaves the other families' tests with nothing to run."""
    folders = []
    for root in parity_roots():
        folders += [root] if (root / "cases.json").is_file() else sorted(p.parent for p in root.glob("*/cases.json"))
    if families is not None:
        folders = [f for f in folders if PARITY_MODELS.get(f.name, ("eov_seg",))[0] in families]
    if not folders and "OVSEG_PARITY_DIR" not in os.environ:
        defaults = {"san": DEFAULT_SEMANTIC_PARITY_ROOT, "sed": DEFAULT_SEMANTIC_PARITY_ROOT}
        return [defaults.get((families or ("eov_seg",))[0], DEFAULT_PARITY_ROOT)]
    return folders


def parity_folder_named(name: str) -> Path:
    """The fixture folder `name` from the selection (else under the default root), checked."""
    selected = [f for f in parity_folders() if f.name == name]
    root = DEFAULT_SEMANTIC_PARITY_ROOT if PARITY_MODELS.get(name, ("eov_seg",))[0] in ("san", "sed") else DEFAULT_PARITY_ROOT
    folder = selected[0] if selected else root / name
    check_parity_folder(folder)
    return folder


def check_parity_folder(folder: Path) -> tuple[str, str]:
    """(family, variant) of a fixture folder; fails the test when it is missing or unknown."""
    if not (folder / "cases.json").is_file():
        pytest.fail(f"parity fixtures missing: {folder}/cases.json (set OVSEG_PARITY_DIR to a fixture folder or their parent)")
    if folder.name not in PARITY_MODELS:
        pytest.fail(f"unknown parity fixture folder {folder.name!r}: expected one of {', '.join(PARITY_MODELS)}")
    return PARITY_MODELS[folder.name]


def load_cases(folder: Path) -> list[dict]:
    cases = json.loads((folder / "cases.json").read_text())
    for case in cases:
        if not (folder / f"{case['name']}.npz").is_file():
            pytest.fail(f"parity fixture file missing: {folder / case['name']}.npz (listed in cases.json)")
    return cases


def _load_weights_module(folder: Path):
    candidates = [folder / "weights.py", folder.parent / "weights.py"]
    for path in candidates:
        if path.is_file():
            spec = importlib.util.spec_from_file_location("parity_weights", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    pytest.fail(f"weights.py not found next to {folder} or in its parent")


def write_stand_in_checkpoint(folder: Path, path: Path) -> Path:
    """A detectron2-format file ({"model": state_dict}) of a folder's stand-in weights."""
    module = _load_weights_module(folder)
    specs = list(folder.glob("*_state_dict_spec.json"))
    if not specs:
        pytest.fail(f"parity fixture file missing: {folder}/*_state_dict_spec.json")
    spec = json.loads(specs[0].read_text())["tensors"]
    torch.save({"model": module.make_state_dict(spec), "iteration": 0}, path)
    return path
