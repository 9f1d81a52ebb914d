"""SED (CVPR 2024, xb534/SED) in plain PyTorch, one file per component."""

from ovseg_ros.modeling.sed.config import SEDConfig, StaticTopKRejection, TopKRejection, sed_config
from ovseg_ros.modeling.sed.keys import SED_KEYS, detect_sed_variant, load_sed, load_sed_state_dict
from ovseg_ros.modeling.sed.preprocess import clip_input, preprocess, resize_image, resized_size, semantic_scores
from ovseg_ros.modeling.sed.sed import SED, SEDOutput
from ovseg_ros.modeling.sed.text import IMAGENET_TEMPLATES, encode_class_names, synonyms

__all__ = [
    "IMAGENET_TEMPLATES",
    "SED",
    "SED_KEYS",
    "SEDConfig",
    "SEDOutput",
    "StaticTopKRejection",
    "TopKRejection",
    "clip_input",
    "detect_sed_variant",
    "encode_class_names",
    "load_sed",
    "load_sed_state_dict",
    "preprocess",
    "resize_image",
    "resized_size",
    "sed_config",
    "semantic_scores",
    "synonyms",
]
