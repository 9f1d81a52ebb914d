"""Configurations as dataclasses: the models (EOV-Seg, FC-CLIP), their variants, and the
inference settings."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar, Union


# A warehouse robot's vocabulary, used when none is given, with its things.
DEFAULT_CLASSES = "person; forklift; pallet; box, cardboard box; shelf, rack; floor; wall; ceiling"
DEFAULT_THINGS = "person; forklift; pallet; box"


@dataclass(frozen=True)
class CLIPConfig:
    """A CLIP (image tower + text tower): OpenAI's ResNets, or a LAION ConvNeXt (timm)."""

    name: str = "RN50"
    kind: str = "resnet"  # "resnet" | "convnext" | "vit" (SAN, built by its own network)
    timm_name: str = ""  # the ConvNeXt trunk's timm model name
    quick_gelu: bool = True  # OpenAI weights use QuickGELU in the text tower, LAION's plain GELU
    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    width: int = 64
    heads: int = 32
    image_size: int = 224
    embed_dim: int = 1024
    vocab_size: int = 49408
    context_length: int = 77
    text_width: int = 512
    text_heads: int = 8
    text_layers: int = 12


@dataclass(frozen=True)
class EOVSegConfig:
    """Architecture of one EOV-Seg variant (defaults: EOV-Seg S, ResNet-50 CLIP)."""

    variant: str = "S"
    clip: CLIPConfig = field(default_factory=CLIPConfig)
    vit_width: int = 768
    vit_heads: int = 12
    vit_patch_size: int = 16
    vit_image_size: int = 224
    agg_dim: int = 128
    hidden_dim: int = 256
    num_queries: int = 100
    num_stages: int = 3
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    size_divisibility: int = 32
    ensemble_on_valid_mask: bool = True  # ResNet CLIPs: CLIP votes only for masks it can see
    family: ClassVar[str] = "eov_seg"
    semantic_only: ClassVar[bool] = False  # panoptic: instances of things, stuff regions
    whole_class_names: ClassVar[bool] = False  # each synonym its own text row, a class scores as its best


@dataclass(frozen=True)
class FCCLIPConfig:
    """Architecture of one FC-CLIP variant (defaults: ConvNeXt-L CLIP, the published model)."""

    variant: str = "L"
    clip: CLIPConfig = field(default_factory=CLIPConfig)
    hidden_dim: int = 256
    mask_dim: int = 256
    num_queries: int = 250
    heads: int = 8
    ffn_dim: int = 2048
    decoder_layers: int = 9  # after the prediction from the learnt queries: 10 predictions
    encoder_layers: int = 6  # deformable attention layers of the pixel decoder
    pixel_mean: tuple[float, float, float] = (122.7709383, 116.7460125, 104.09373615)  # CLIP's, in 0..255
    pixel_std: tuple[float, float, float] = (68.5005327, 66.6321579, 70.32316305)
    size_divisibility: int = 32
    ensemble_on_valid_mask: bool = False  # True for its ResNet CLIPs, as published
    family: ClassVar[str] = "fc_clip"
    semantic_only: ClassVar[bool] = False
    whole_class_names: ClassVar[bool] = False


@dataclass(frozen=True)
class SANConfig:
    """Architecture of one SAN variant (MendelXu/SAN configs `san_clip_vit_res4_coco.yaml`,
    `san_clip_vit_large_res4_coco.yaml`: the model zoo's ViT-B/16 and ViT-L/14)."""

    variant: str = "B"
    clip_name: str = "ViT-B/16"
    clip_width: int = 768
    clip_heads: int = 12
    clip_patch_size: int = 16
    clip_image_size: int = 224
    clip_feature_layers: int = 9  # blocks run for the dense features; the rest recognise
    clip_total_layers: int = 12
    fused_layers: tuple[int, ...] = (0, 3, 6, 9)  # CLIP layers added to the adapter after its blocks 0, 1, 2, 3
    clip_resolution: float = 0.5  # the CLIP branch sees the padded image scaled by this
    embed_dim: int = 512
    text_width: int = 512
    text_heads: int = 8
    text_layers: int = 12
    vocab_size: int = 49408
    context_length: int = 77
    side_width: int = 240
    side_depth: int = 8
    side_heads: int = 6
    side_patch_size: int = 16
    side_image_size: int = 640
    num_queries: int = 100
    size_divisibility: int = 32
    pixel_mean: tuple[float, float, float] = (122.7709383, 116.7460125, 104.09373615)  # CLIP's, in 0..255
    pixel_std: tuple[float, float, float] = (68.5005327, 66.6321579, 70.32316305)
    ensemble_on_valid_mask: bool = True  # no CLIP view of the masks: every query's is marked invalid
    family: ClassVar[str] = "san"
    semantic_only: ClassVar[bool] = True  # no instances: segments are the classes present
    whole_class_names: ClassVar[bool] = True  # "car, automobile" is one prompt, as SAN evaluates ADE20K

    @property
    def clip(self) -> CLIPConfig:
        """The CLIP's text side and embedding size, as the other models describe theirs."""
        return CLIPConfig(name=self.clip_name, kind="vit", embed_dim=self.embed_dim, vocab_size=self.vocab_size,
                          context_length=self.context_length, text_width=self.text_width, text_heads=self.text_heads,
                          text_layers=self.text_layers, image_size=self.clip_image_size)


@dataclass(frozen=True)
class SEDConfig:
    """Architecture of one SED variant (defaults: SED (B), open_clip `convnext_base_w_320`).

    The decoder sizes are those of `configs/convnextB_768.yaml` and
    `configs/convnextL_768.yaml`; only the CLIP and the appearance-guidance inputs
    (the trunk's res4/res3/res2 widths) differ between the variants.
    """

    variant: str = "B"
    clip_name: str = "convnext_base_w_320"  # open_clip's name of the CLIP
    timm_name: str = "convnext_base"  # the image tower's trunk
    projection: str = "linear"  # CLIP head after the trunk: "linear" (B) or "mlp" (L)
    embed_dim: int = 640
    text_width: int = 640
    text_heads: int = 10
    text_layers: int = 12
    vocab_size: int = 49408
    context_length: int = 77
    num_templates: int = 80  # prompt templates: the cost volume's input channels
    hidden_dim: int = 128
    decoder_dims: tuple[int, int, int] = (64, 32, 16)
    guidance_dims: tuple[int, int, int] = (32, 16, 8)  # appearance and cost-volume guidance per Up block
    num_heads: int = 4
    kernel_size: int = 9  # depthwise kernel of the decoder's ConvNeXt blocks
    pooling_sizes: tuple[int, int] = (1, 1)  # before class attention: eval.sh's [1, 1] (training used [2, 2])
    clip_resolution: tuple[int, int] = (768, 768)
    clip_pixel_mean: tuple[float, float, float] = (122.7709383, 116.7460125, 104.09373615)  # RGB, 0..255
    clip_pixel_std: tuple[float, float, float] = (68.5005327, 66.6321579, 70.3231630)
    min_size_test: int = 640
    max_size_test: int = 2560
    family: ClassVar[str] = "sed"
    semantic_only: ClassVar[bool] = True  # no instances: segments are the classes present
    whole_class_names: ClassVar[bool] = True  # SED splits a class's string on ", " into synonyms itself

    @property
    def pixel_mean(self) -> tuple[float, float, float]:
        return self.clip_pixel_mean

    @property
    def pixel_std(self) -> tuple[float, float, float]:
        return self.clip_pixel_std

    @property
    def clip(self) -> CLIPConfig:
        """The CLIP's text side and embedding size, as the other models describe theirs."""
        return CLIPConfig(name=self.clip_name, kind="convnext", timm_name=self.timm_name, quick_gelu=False,
                          embed_dim=self.embed_dim, vocab_size=self.vocab_size, context_length=self.context_length,
                          text_width=self.text_width, text_heads=self.text_heads, text_layers=self.text_layers)


ModelConfig = Union[EOVSegConfig, FCCLIPConfig, SANConfig, SEDConfig]


@dataclass(frozen=True)
class InferenceConfig:
    """Test-time settings of the published R50 config, all overridable."""

    min_size: int = 640  # short side after resizing; 0 keeps the input size
    max_size: int = 2560  # cap on the long side
    ensemble_alpha: float = 0.4  # weight of CLIP's own prediction for seen classes
    ensemble_beta: float = 0.8  # ... and for classes unseen in training
    ensemble_on_valid_mask: bool | None = None  # None: the variant's setting
    object_mask_threshold: float = 0.0
    overlap_threshold: float = 0.8
    semantic_threshold: float = 0.0  # pixels whose best semantic score is lower get no class (-1)
    # SED's category early rejection with the torch backend: 0 off (SED's eval.sh default),
    # k: after each of its first three stages only classes in the top k somewhere go on
    # (eval.sh's fast setting: 8); compiled engines have theirs fixed at export
    early_rejection_topk: int = 0


RN50 = CLIPConfig()
RN50X4 = CLIPConfig(
    name="RN50x4", layers=(4, 6, 10, 6), width=80, heads=40, image_size=288, embed_dim=640, text_width=640, text_heads=10
)

CONVNEXT_LARGE = CLIPConfig(
    name="convnext_large_d_320", kind="convnext", timm_name="convnext_large", quick_gelu=False, image_size=320,
    embed_dim=768, text_width=768, text_heads=12, text_layers=16,
)

VARIANTS: dict[str, EOVSegConfig] = {
    "S": EOVSegConfig(variant="S", clip=RN50),
    "M": EOVSegConfig(variant="M", clip=RN50X4),
    "L": EOVSegConfig(variant="L", clip=CONVNEXT_LARGE, agg_dim=96, ensemble_on_valid_mask=False),
}
FC_CLIP_VARIANTS: dict[str, FCCLIPConfig] = {
    "R50": FCCLIPConfig(variant="R50", clip=RN50, ensemble_on_valid_mask=True),
    "L": FCCLIPConfig(variant="L", clip=CONVNEXT_LARGE),
}
SAN_VARIANTS: dict[str, SANConfig] = {
    "B": SANConfig(),
    "L": SANConfig(variant="L", clip_name="ViT-L/14@336", clip_width=1024, clip_heads=16, clip_patch_size=14,
                   clip_image_size=336, clip_feature_layers=18, clip_total_layers=24, fused_layers=(0, 6, 12, 18),
                   clip_resolution=0.7, embed_dim=768, text_width=768, text_heads=12),
}
SED_VARIANTS: dict[str, SEDConfig] = {
    "B": SEDConfig(),
    "L": SEDConfig(
        variant="L",
        clip_name="convnext_large_d_320",
        timm_name="convnext_large",
        projection="mlp",
        embed_dim=768,
        text_width=768,
        text_heads=12,
        text_layers=16,
    ),
}
MODELS = {"eov_seg": VARIANTS, "fc_clip": FC_CLIP_VARIANTS, "san": SAN_VARIANTS, "sed": SED_VARIANTS}
MODEL_NAMES = {"eov_seg": "EOV-Seg", "fc_clip": "FC-CLIP", "san": "SAN", "sed": "SED"}
ALIASES = {
    "eov_seg": {
        "rn50": "S", "r50": "S", "s": "S", "rn50x4": "M", "r50x4": "M", "m": "M",
        "l": "L", "convnext-l": "L", "convnext_large": "L", "toy": "toy",
    },
    "fc_clip": {"r50": "R50", "rn50": "R50", "l": "L", "convnext-l": "L", "convnext_large": "L", "toy": "toy"},
    "san": {"b": "B", "vit-b/16": "B", "vit-b-16": "B", "l": "L", "vit-l/14": "L", "vit-l-14": "L"},
    "sed": {"b": "B", "convnext-b": "B", "convnext_base": "B", "l": "L", "convnext-l": "L", "convnext_large": "L"},
}
DEFAULT_VARIANTS = {"eov_seg": "S", "fc_clip": "L", "san": "B", "sed": "B"}
MODEL_HELP = ("eov_seg (EOV-Seg: fast, panoptic), fc_clip (FC-CLIP: accurate, panoptic), san (SAN: semantic only) or sed "
              "(SED: semantic only)")
VARIANT_HELP = {"eov_seg": "S (RN50 CLIP), M (RN50x4) or L (ConvNeXt-L)", "fc_clip": "R50 (RN50 CLIP) or L (ConvNeXt-L)",
                "san": "B (ViT-B/16 CLIP) or L (ViT-L/14)", "sed": "B (ConvNeXt-B CLIP) or L (ConvNeXt-L)"}


def toy_config() -> EOVSegConfig:
    """The real architecture at toy widths: for tests and CPU smoke runs, not a released model."""
    return EOVSegConfig(variant="toy", clip=TOY_CLIP, vit_width=32, vit_heads=2, agg_dim=16, hidden_dim=32, num_queries=10)


TOY_CLIP = CLIPConfig(name="toy", layers=(1, 1, 1, 1), width=16, heads=2, embed_dim=32, text_width=32, text_heads=2, text_layers=1)
VARIANTS["toy"] = toy_config()
FC_CLIP_VARIANTS["toy"] = FCCLIPConfig(
    variant="toy", clip=TOY_CLIP, hidden_dim=32, mask_dim=32, num_queries=10, heads=2, ffn_dim=64, decoder_layers=3,
    encoder_layers=1, ensemble_on_valid_mask=True,
)


def check_model(model: str) -> str:
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose {MODEL_HELP}")
    return model


def model_config(model: str = "eov_seg", variant: str | None = None) -> ModelConfig:
    """A variant of a model: EOV-Seg S (RN50 CLIP), M (RN50x4), L (ConvNeXt-L); FC-CLIP
    R50 (RN50 CLIP), L (ConvNeXt-L). None: the model's default (S, L)."""
    check_model(model)
    name = DEFAULT_VARIANTS[model] if variant is None else variant
    key = ALIASES[model].get(name.lower())
    if key is None:
        raise ValueError(f"unknown {MODEL_NAMES[model]} variant {name!r}; choose one of {VARIANT_HELP[model]}")
    return MODELS[model][key]


def sed_config(variant: str = "B", **overrides) -> SEDConfig:
    """The published architecture of variant "B" or "L", with optional field overrides."""
    key = variant.upper()
    if key not in SED_VARIANTS:
        raise ValueError(f"unknown SED variant {variant!r}: expected one of {', '.join(SED_VARIANTS)}")
    return replace(SED_VARIANTS[key], **overrides)


def variant_config(name: str) -> EOVSegConfig:
    """An EOV-Seg variant: `S` (RN50 CLIP), `M` (RN50x4) or `L` (ConvNeXt-L)."""
    return model_config("eov_seg", name)


__all__ = [
    "DEFAULT_CLASSES", "DEFAULT_THINGS", "CLIPConfig", "EOVSegConfig", "FCCLIPConfig", "InferenceConfig", "ModelConfig",
    "MODELS", "VARIANTS", "FC_CLIP_VARIANTS", "model_config", "variant_config", "replace",
]
