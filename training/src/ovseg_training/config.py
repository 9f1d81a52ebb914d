"""Training configuration as dataclasses; defaults are EOV-Seg's COCO recipe."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


@dataclass
class DataConfig:
    root: str = "datasets/coco"
    annotations: str = "annotations/panoptic_train2017.json"
    images: str = "train2017"
    panoptic_masks: str = "annotations/panoptic_train2017"
    image_size: int = 1024  # large-scale jitter output (square)
    min_scale: float = 0.1
    max_scale: float = 2.0
    flip: bool = True
    workers: int = 4
    # the classes' text: "auto" (COCO panoptic: the published prompt-engineered names and
    # synonyms, as EOV-Seg trains; other datasets: their JSON names), "json",
    # "coco_published", "ade20k_published"
    class_names: str = "auto"


@dataclass
class LossConfig:
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75


@dataclass
class GKCConfig:
    """GKC's training options (ovseg_training/gkc.py); all off is the published EOV-Seg."""

    text_diversification: bool = False  # each segment sees one of its class's names, drawn per step
    distill_weight: float = 0.0  # matched query embedding -> frozen CLIP's embedding of its region
    relation_weight: float = 0.0  # pairwise similarities of an image's segments -> CLIP's


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.05
    weight_decay_norm: float = 0.0  # normalisation layers
    weight_decay_embed: float = 0.0  # nn.Embedding (query kernels, void)
    clip_grad_norm: float = 0.01  # over the full model
    steps: tuple[int, ...] = (163889, 187546)
    gamma: float = 0.1
    max_iter: int = 200_000
    batch_size: int = 16  # total over all processes and accumulation steps
    grad_accumulation: int = 1


@dataclass
class TrainConfig:
    output_dir: str = "output/eovseg_r50"
    variant: str = "S"
    init_checkpoint: str = ""  # an EOV-Seg checkpoint to fine-tune from
    clip_resnet: str = ""  # or: OpenAI CLIP RN50 file + ViT-B/16 file for the frozen towers
    clip_vit: str = ""
    amp: str = "none"  # "none" | "bf16" | "fp16"
    checkpoint_every: int = 5000
    log_every: int = 20
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    gkc: GKCConfig = field(default_factory=GKCConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Raises ValueError naming any field the config does not have."""
        values = dict(values)
        sections = {"data": DataConfig, "loss": LossConfig, "optim": OptimConfig, "gkc": GKCConfig}
        parts = {}
        for name, section in sections.items():
            given = dict(values.pop(name, {}) or {})
            _check_fields(section, given, f"{name}.")
            if name == "optim" and "steps" in given:
                given["steps"] = tuple(given["steps"])
            parts[name] = section(**given)
        _check_fields(cls, values, "")
        return cls(**parts, **values)

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        """A JSON config file; FileNotFoundError or ValueError saying what is wrong."""
        return cls.from_dict(_read_object(path, "TrainConfig", "training/configs/*.json"))


def _read_object(path: str | Path, what: str, example: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path} (example: {example})")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a JSON object with {what} fields")
    return values


def _check_fields(section, given: dict, prefix: str) -> None:
    known = {f.name for f in fields(section)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ValueError(f"unknown config field(s): {', '.join(prefix + u for u in unknown)}; known: {', '.join(sorted(known))}")


@dataclass
class EvalConfig:
    """What `ovseg-eval --config` reads: the split, its class names and the test-time
    settings (ovseg_ros.config.InferenceConfig's fields; its defaults are the published R50
    test settings). Paths relative to where the command runs."""

    annotations: str = ""
    images: str = ""
    panoptic_masks: str = ""
    class_names: str = "auto"
    inference: dict = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: str | Path) -> EvalConfig:
        from ovseg_ros.config import InferenceConfig

        values = _read_object(path, "EvalConfig", "training/configs/eval_ade20k.json")
        _check_fields(cls, values, "")
        _check_fields(InferenceConfig, values.get("inference", {}) or {}, "inference.")
        return cls(**values)
