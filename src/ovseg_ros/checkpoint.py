"""Loading and saving weights under the official EOV-Seg (detectron2) key names.

Official checkpoints hold more than inference uses: both CLIP text towers' siblings, ViT
blocks 1..11, the training criterion's buffer. Those are skipped by name. Anything else
that does not fit (a missing key, an unknown key, a shape mismatch) is refused with the
key and both shapes, so a wrong variant or a truncated file never half-loads.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

# (official prefix, our prefix), most specific first.
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("cnn_backbone.clip_model.visual.", "image_encoder."),
    ("cnn_backbone.clip_model.logit_scale", "clip_logit_scale"),
    ("cnn_backbone.clip_model.", "text_encoder."),
    ("vit_backbone.clip_model.visual.transformer.resblocks.0.", "vit_stem.block."),
    ("vit_backbone.clip_model.visual.", "vit_stem."),
    ("lite_aggr.loc_conv.", "neck.loc_conv."),
    ("lite_aggr.deconv.", "neck."),
    ("light_weight_decoder.", "decoder."),
    ("void_embedding.weight", "void_embedding"),
)
_REVERSE = sorted(((ours, official) for official, ours in _PREFIXES), key=lambda pair: -len(pair[0]))

# Official keys that inference does not use, skipped knowingly.
_UNUSED = re.compile(
    r"^(vit_backbone\.clip_model\.(?!visual\.)"  # the ViT CLIP's text tower
    r"|vit_backbone\.clip_model\.visual\.transformer\.resblocks\.([1-9]|\d\d+)\."  # ViT blocks 1..
    r"|vit_backbone\.clip_model\.visual\.(ln_post|proj)\b"
    r"|light_weight_decoder\.criterion\.)"
)


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model; the message names the keys."""


def official_to_ours(name: str) -> str | None:
    """Our parameter name for an official key, or None when the key is knowingly unused."""
    if _UNUSED.match(name):
        return None
    for official, ours in _PREFIXES:
        if name.startswith(official):
            return ours + name[len(official) :]
    return name


def ours_to_official(name: str) -> str:
    for ours, official in _REVERSE:
        if name.startswith(ours):
            return official + name[len(ours) :]
    return name


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: detectron2 (`{"model": ...}`, .pth or .pkl),
    a training checkpoint of ours, or a plain state dict. Fast: PyTorch zip files are
    memory-mapped, tensors are read when used. Anything else raises CheckpointError
    saying what the file is instead."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
    with open(path, "rb") as f:
        head = f.read(8)
    if zipfile.is_zipfile(path):
        data = _torch_load(path, mmap=True)
    elif head[:1] == b"\x80":  # a pickle: detectron2's converted .pkl, or PyTorch's legacy format
        data = _read_pickle(path) if path.suffix == ".pkl" else _torch_load(path, mmap=False)
    else:
        raise CheckpointError(
            f"not an EOV-Seg checkpoint: {path} is neither a PyTorch file (zip) nor a pickle; it starts with {head!r}"
        )
    if isinstance(data, Mapping):
        for key in ("model", "state_dict"):
            if key in data and isinstance(data[key], Mapping):
                data = data[key]
                break
    if not isinstance(data, Mapping):
        raise CheckpointError(f"not an EOV-Seg checkpoint: {path} holds a {type(data).__name__}, not a state dict")
    tensors = {}
    for name, value in data.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if isinstance(value, torch.Tensor):
            tensors[str(name)] = value
    if not tensors:
        raise CheckpointError(f"not an EOV-Seg checkpoint: {path} holds no tensors")
    return tensors


def _torch_load(path: Path, mmap: bool):
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, pickle.UnpicklingError) and "weights_only" in str(exc):
            reason = "it holds Python objects other than tensors and plain containers (refused for safety)"
        raise CheckpointError(f"not an EOV-Seg checkpoint: {path}: {reason}") from exc


def _read_pickle(path: Path):
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")  # detectron2's converted-model format
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as exc:
        raise CheckpointError(f"not an EOV-Seg checkpoint: {path}: {exc}") from exc


def load_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Load official-named (or our-named) tensors into `model`, strictly.

    Returns the official keys that were skipped as unused by inference.
    """
    expected = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    skipped, unexpected, mismatched = [], [], []
    for name, tensor in state_dict.items():
        ours = official_to_ours(name) if name not in expected else name
        if ours is None:
            skipped.append(name)
        elif ours not in expected:
            unexpected.append(name)
        elif tuple(expected[ours].shape) != tuple(tensor.shape):
            mismatched.append(f"{name}: checkpoint {tuple(tensor.shape)} vs model {tuple(expected[ours].shape)}")
        else:
            mapped[ours] = tensor
    missing = [ours_to_official(name) for name in expected if name not in mapped]
    problems = []
    if mismatched:
        problems.append("shape mismatch:\n  " + "\n  ".join(mismatched[:20]))
    if missing:
        problems.append(f"missing {len(missing)} keys:\n  " + "\n  ".join(missing[:20]))
    if unexpected:
        problems.append(f"{len(unexpected)} unknown keys:\n  " + "\n  ".join(unexpected[:20]))
    if problems:
        raise CheckpointError("checkpoint does not fit the model (wrong variant or damaged file?)\n" + "\n".join(problems))
    model.load_state_dict(mapped, strict=True)
    return skipped


def official_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors under official key names, for checkpoints the node can load."""
    return {ours_to_official(name): tensor for name, tensor in model.state_dict().items()}


def load_checkpoint(model: nn.Module, path: str | Path) -> list[str]:
    return load_state_dict(model, read_state_dict(path))


def load_clip_towers(model: nn.Module, resnet_clip: str | Path, vit_clip: str | Path) -> None:
    """Initialise the frozen CLIP parts from CLIP checkpoints (OpenAI's TorchScript
    archives or open_clip state dicts), for training from scratch."""
    resnet = _read_clip(resnet_clip)
    vit = _read_clip(vit_clip)
    wanted = model.state_dict()
    loaded = {}
    for name, tensor in resnet.items():
        ours = official_to_ours("cnn_backbone.clip_model." + name)
        if ours in wanted:
            loaded[ours] = tensor
    for name, tensor in vit.items():
        ours = official_to_ours("vit_backbone.clip_model." + name)
        if ours in wanted:
            loaded[ours] = tensor
    clip_params = [n for n in wanted if n.startswith(("image_encoder.", "text_encoder.", "vit_stem.", "clip_logit_scale"))]
    missing = [n for n in clip_params if n not in loaded and not n.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError("CLIP checkpoints lack:\n  " + "\n  ".join(missing[:20]))
    for name, tensor in loaded.items():
        if tuple(tensor.shape) != tuple(wanted[name].shape):
            raise CheckpointError(f"{name}: CLIP checkpoint {tuple(tensor.shape)} vs model {tuple(wanted[name].shape)}")
    model.load_state_dict(loaded, strict=False)


def _read_clip(path: str | Path) -> dict[str, Any]:
    """OpenAI's CLIP files are TorchScript archives (a code/ folder inside the zip);
    open_clip's are plain state dicts."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            torchscript = any("/code/" in name for name in archive.namelist())
        if torchscript:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    return read_state_dict(path)


# EOV-Seg variants by their CLIP image tower: (official key, shape[0]) -> variant.
_EOV_SEG_STEMS = {
    ("cnn_backbone.clip_model.visual.conv1.weight", 32): "S",  # RN50
    ("cnn_backbone.clip_model.visual.conv1.weight", 40): "M",  # RN50x4
    ("cnn_backbone.clip_model.visual.trunk.stem.0.weight", 192): "L",  # ConvNeXt-L
    ("cnn_backbone.clip_model.visual.conv1.weight", 8): "toy",  # the toy-width test model
}
VARIANT_NAMES = {
    "S": "EOV-Seg S (RN50 CLIP)", "M": "EOV-Seg M (RN50x4 CLIP)", "L": "EOV-Seg L (ConvNeXt-L CLIP)",
    "toy": "the toy-width EOV-Seg (tests and synthetic runs)",
}


def detect_variant(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The EOV-Seg variant a state dict (official or our names) was made for, from its
    CLIP image tower; CheckpointError when it is no EOV-Seg checkpoint."""
    for (official, width), variant in _EOV_SEG_STEMS.items():
        for name in (official, official_to_ours(official)):
            tensor = state_dict.get(name)
            if tensor is not None and tensor.dim() == 4 and tensor.shape[0] == width:
                return variant
    sample = ", ".join(list(state_dict)[:3])
    raise CheckpointError(
        f"not an EOV-Seg checkpoint: its {len(state_dict)} tensors have no EOV-Seg CLIP image tower "
        f"(expected e.g. cnn_backbone.clip_model.visual.conv1.weight); its first keys: {sample}"
    )


def check_variant(state_dict: Mapping[str, torch.Tensor], requested: str | None) -> str:
    """The checkpoint's variant; a different explicitly requested one is refused with the right name."""
    from ovseg_ros.config import variant_config

    found = detect_variant(state_dict)
    if requested is not None and variant_config(requested).variant != found:
        wanted = variant_config(requested).variant
        raise CheckpointError(
            f"the checkpoint is {VARIANT_NAMES[found]}, not {VARIANT_NAMES.get(wanted, wanted)}: pass --variant {found} "
            f"(node parameter variant: {found}), or leave the variant out to take it from the checkpoint"
        )
    return found
