"""Loading and saving weights under the official (detectron2) key names of EOV-Seg,
FC-CLIP, SAN and SED: the one place that maps a checkpoint to its model family.

Official checkpoints hold more than inference uses: EOV-Seg's ViT CLIP text tower and
ViT blocks 1..11, the training criterion's buffer. Those are skipped by name. Anything
else that does not fit (a missing key, an unknown key, a shape mismatch) is refused with
the key and both shapes, so a wrong variant or a truncated file never half-loads. Which
model and variant a checkpoint holds is read from its keys.
"""

from __future__ import annotations

import functools
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class KeyMap:
    """One model's official key names: (official prefix, our prefix) pairs, most specific
    first, and the official keys inference does not use."""

    prefixes: tuple[tuple[str, str], ...]
    unused: re.Pattern

    def to_ours(self, name: str) -> str | None:
        if self.unused.match(name):
            return None
        for official, ours in self.prefixes:
            if name.startswith(official):
                return ours + name[len(official) :]
        return name

    @functools.cached_property
    def _reverse(self) -> tuple[tuple[str, str], ...]:
        """(our prefix, official prefix), longest of ours first."""
        return tuple(sorted(((o, f) for f, o in self.prefixes), key=lambda pair: -len(pair[0])))

    def to_official(self, name: str) -> str:
        for ours, official in self._reverse:
            if name.startswith(ours):
                return official + name[len(ours) :]
        return name


KEY_MAPS = {
    "eov_seg": KeyMap(
        (
            ("cnn_backbone.clip_model.visual.", "image_encoder."),
            ("cnn_backbone.clip_model.logit_scale", "clip_logit_scale"),
            ("cnn_backbone.clip_model.", "text_encoder."),
            ("vit_backbone.clip_model.visual.transformer.resblocks.0.", "vit_stem.block."),
            ("vit_backbone.clip_model.visual.", "vit_stem."),
            ("lite_aggr.loc_conv.", "neck.loc_conv."),
            ("lite_aggr.deconv.", "neck."),
            ("light_weight_decoder.", "decoder."),
            ("void_embedding.weight", "void_embedding"),
        ),
        re.compile(
            r"^(vit_backbone\.clip_model\.(?!visual\.)"  # the ViT CLIP's text tower
            r"|vit_backbone\.clip_model\.visual\.transformer\.resblocks\.([1-9]|\d\d+)\."  # ViT blocks 1..
            r"|vit_backbone\.clip_model\.visual\.(ln_post|proj)\b"
            r"|light_weight_decoder\.criterion\.)"
        ),
    ),
    "fc_clip": KeyMap(
        (
            ("backbone.clip_model.visual.", "image_encoder."),
            ("backbone.clip_model.logit_scale", "clip_logit_scale"),
            ("backbone.clip_model.", "text_encoder."),
            ("sem_seg_head.pixel_decoder.", "pixel_decoder."),
            ("sem_seg_head.predictor.", "transformer_decoder."),
            ("void_embedding.weight", "void_embedding"),
        ),
        re.compile(r"^criterion\."),
    ),
    "san": KeyMap(
        (
            ("clip_visual_extractor.", "clip_features."),
            ("clip_rec_head.", "recognition_head."),
            ("side_adapter_network.", "side_adapter."),
            ("ov_classifier.bg_embed", "background_embedding"),
            ("ov_classifier.logit_scale", "class_logit_scale"),
            ("ov_classifier.", "text_encoder."),
        ),
        # the training criterion's buffer; open_clip's causal text mask, which SAN saves as a
        # buffer (the text tower here builds its causal attention itself)
        re.compile(r"^(criterion\.|ov_classifier\.attn_mask$)"),
    ),
    # SED keeps everything under sem_seg_head.predictor.: open_clip's CLIP (image tower, text
    # tower, an unused logit scale: SED computes clamp(exp(logit_scale), 100) and never uses
    # it) and the decoder; below those prefixes our modules keep the official names
    "sed": KeyMap(
        (
            ("sem_seg_head.predictor.clip_model.visual.", "image_encoder."),
            ("sem_seg_head.predictor.clip_model.", "text_encoder."),
            ("sem_seg_head.predictor.transformer.", "decoder."),
        ),
        re.compile(r"^sem_seg_head\.predictor\.clip_model\.logit_scale$"),
    ),
}


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model; the message names the keys."""


def official_to_ours(name: str, family: str = "eov_seg") -> str | None:
    """Our parameter name for an official key, or None when the key is knowingly unused."""
    return KEY_MAPS[family].to_ours(name)


def ours_to_official(name: str, family: str = "eov_seg") -> str:
    return KEY_MAPS[family].to_official(name)


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
    keys = KEY_MAPS[getattr(model, "family", "eov_seg")]
    mapped: dict[str, torch.Tensor] = {}
    skipped, unexpected, mismatched = [], [], []
    for name, tensor in state_dict.items():
        ours = keys.to_ours(name) if name not in expected else name
        if ours is None:
            skipped.append(name)
        elif ours not in expected:
            unexpected.append(name)
        elif tuple(expected[ours].shape) != tuple(tensor.shape):
            mismatched.append(f"{name}: checkpoint {tuple(tensor.shape)} vs model {tuple(expected[ours].shape)}")
        else:
            mapped[ours] = tensor
    missing = [keys.to_official(name) for name in expected if name not in mapped]
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
    keys = KEY_MAPS[getattr(model, "family", "eov_seg")]
    return {keys.to_official(name): tensor for name, tensor in model.state_dict().items()}


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


# Which model a state dict is, from its keys (official or ours), and which variant, from
# its CLIP image tower's stem: (stem key under our names, output channels) -> variant.
_FAMILY_MARKERS = {
    "eov_seg": ("lite_aggr.", "light_weight_decoder.", "cnn_backbone.", "neck.", "decoder."),
    "fc_clip": ("sem_seg_head.", "backbone.", "pixel_decoder.", "transformer_decoder."),
    "san": ("side_adapter_network.", "clip_rec_head.", "side_adapter.", "recognition_head."),
}
_SED_MARKERS = ("sem_seg_head.predictor.transformer.", "sem_seg_head.predictor.clip_model.", "decoder.decoder1.")
# SAN's variant from its CLIP's patch embedding (our name): output channels -> variant
_SAN_STEMS = {768: "B", 1024: "L"}
_STEMS = {
    ("image_encoder.conv1.weight", 32): ("S", "R50"),  # RN50 (EOV-Seg, FC-CLIP)
    ("image_encoder.conv1.weight", 40): ("M", None),  # RN50x4
    ("image_encoder.trunk.stem.0.weight", 192): ("L", "L"),  # ConvNeXt-L
    ("image_encoder.conv1.weight", 8): ("toy", "toy"),  # the toy-width test models
}
_CLIP_NAMES = {"S": "RN50", "M": "RN50x4", "L": "ConvNeXt-L", "R50": "RN50", "toy": "toy-width"}


def _clip_tower(ours: Mapping[str, torch.Tensor], deeper: bool) -> str:
    """Which CLIP image tower a state dict (our names) has, from its stem ('' if none)."""
    stem = ours.get("image_encoder.conv1.weight")
    if stem is None or stem.dim() != 4:
        return "ConvNeXt" if "image_encoder.trunk.stem.0.weight" in ours else ""
    if deeper and stem.shape[0] == 32:
        return "RN101"
    return {32: "RN50", 40: "RN50x4", 48: "RN50x16", 64: "RN50x64"}.get(int(stem.shape[0]), f"ResNet ({stem.shape[0]}-channel stem)")


def describe_model(family: str, variant: str) -> str:
    """'EOV-Seg S (RN50 CLIP)', 'FC-CLIP L (ConvNeXt-L CLIP)'."""
    from ovseg_ros.config import MODEL_NAMES, MODELS

    clip = getattr(MODELS[family].get(variant), "clip_name", None) or _CLIP_NAMES.get(variant, variant)
    return f"{MODEL_NAMES[family]} {variant} ({clip} CLIP)"


def detect_model(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, str]:
    """(model family, variant) a state dict (official or our names) was made for;
    CheckpointError when it is neither an EOV-Seg nor an FC-CLIP checkpoint."""
    if any(name.startswith(_SED_MARKERS) for name in state_dict):  # before FC-CLIP's, whose head is sem_seg_head. too
        return "sed", detect_sed_variant(state_dict)
    families = [f for f, markers in _FAMILY_MARKERS.items() if any(name.startswith(markers) for name in state_dict)]
    if families == ["san"]:
        return "san", _san_variant(state_dict)
    if len(families) == 1:
        family = families[0]
        keys = KEY_MAPS[family]
        ours = {keys.to_ours(name) or name: tensor for name, tensor in state_dict.items()}
        deeper = any(name.startswith("image_encoder.layer3.10.") for name in ours)  # layer3: RN101 23 blocks, RN50 6, RN50x4 10
        for (stem, width), variants in _STEMS.items():
            tensor = ours.get(stem)
            variant = variants[0] if family == "eov_seg" else variants[1]
            if variant is not None and tensor is not None and tensor.dim() == 4 and tensor.shape[0] == width and not (deeper and width == 32):
                return family, variant
        tower = _clip_tower(ours, deeper)
        if tower:
            from ovseg_ros.config import MODEL_NAMES

            supported = ", ".join(v for v in {"eov_seg": ("S", "M", "L"), "fc_clip": ("R50", "L")}[family])
            raise CheckpointError(f"a {MODEL_NAMES[family]} checkpoint with a CLIP {tower} image tower: not supported here "
                                  f"(supported variants: {supported})")
    sample = ", ".join(list(state_dict)[:3])
    raise CheckpointError(
        f"not an EOV-Seg checkpoint: its {len(state_dict)} tensors are neither EOV-Seg's nor FC-CLIP's (expected e.g. "
        f"cnn_backbone.clip_model.visual.conv1.weight or backbone.clip_model.visual.trunk.stem.0.weight); its first keys: {sample}"
    )


def _san_variant(state_dict: Mapping[str, torch.Tensor]) -> str:
    stem = state_dict.get("clip_visual_extractor.conv1.weight", state_dict.get("clip_features.conv1.weight"))
    if stem is None or stem.dim() != 4 or int(stem.shape[0]) not in _SAN_STEMS:
        shape = None if stem is None else tuple(stem.shape)
        raise CheckpointError(f"a SAN checkpoint whose CLIP patch embedding (clip_visual_extractor.conv1.weight) is {shape}: "
                              "not a supported variant (ViT-B/16: 768 channels, ViT-L/14: 1024)")
    return _SAN_STEMS[int(stem.shape[0])]


_SED_STEM = "image_encoder.trunk.stem.0.weight"
_SED_STEM_WIDTHS = {128: "B", 192: "L"}  # ConvNeXt-B, ConvNeXt-L
_SED_HEADS = {"B": "image_encoder.head.proj.weight", "L": "image_encoder.head.mlp.fc1.weight"}


def unwrap_state_dict(state_dict: Mapping) -> dict[str, torch.Tensor]:
    """A detectron2 file's `model` dict (or the state dict itself), `module.` stripped."""
    if "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]
    return {(k.removeprefix("module.")): v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}


def _sed_ours(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {KEY_MAPS["sed"].to_ours(k) or k: v for k, v in state_dict.items()}


def detect_sed_variant(state_dict: Mapping[str, torch.Tensor]) -> str:
    """"B" or "L" from the image tower's stem width (official or our key names);
    CheckpointError when the keys are not a SED checkpoint's or the tower is unknown."""
    ours = _sed_ours(unwrap_state_dict(state_dict))
    if not any(k.startswith("decoder.decoder1.") for k in ours):
        sample = ", ".join(list(state_dict)[:3])
        raise CheckpointError(
            "not a SED checkpoint: no decoder keys (expected e.g. sem_seg_head.predictor.transformer.decoder1.up.weight); "
            f"its first keys: {sample}"
        )
    stem = ours.get(_SED_STEM)
    if stem is None or stem.dim() != 4:
        raise CheckpointError(f"a SED checkpoint without a ConvNeXt image tower: {KEY_MAPS['sed'].to_official(_SED_STEM)} missing")
    variant = _SED_STEM_WIDTHS.get(int(stem.shape[0]))
    if variant is None:
        raise CheckpointError(
            f"a SED checkpoint with a {stem.shape[0]}-channel ConvNeXt stem: not supported (ConvNeXt-B: 128 -> B, ConvNeXt-L: 192 -> L)"
        )
    if _SED_HEADS[variant] not in ours:
        raise CheckpointError(f"SED {variant} checkpoint lacks its CLIP head {KEY_MAPS['sed'].to_official(_SED_HEADS[variant])}")
    return variant


def check_model(state_dict: Mapping[str, torch.Tensor], model: str | None, variant: str | None) -> tuple[str, str]:
    """The checkpoint's (family, variant); an explicitly requested other model or variant
    is refused with the right --model/--variant."""
    from ovseg_ros.config import MODEL_NAMES, model_config

    family, found = detect_model(state_dict)
    wanted_family = family if model is None else model
    wanted = None if variant is None else model_config(wanted_family, variant).variant
    if (model is not None and model != family) or (wanted is not None and wanted != found):
        asked = describe_model(wanted_family, wanted) if wanted else MODEL_NAMES[wanted_family]
        raise CheckpointError(
            f"the checkpoint is {describe_model(family, found)}, not {asked}: pass --model {family} --variant {found} "
            f"(node parameters model: {family}, variant: {found}), or leave them out to take them from the checkpoint"
        )
    return family, found
