"""Official SED checkpoint keys: which of our modules each belongs to, which variant a
checkpoint holds, and strict loading.

The official checkpoint (detectron2's `checkpoint["model"]`) keeps everything under
`sem_seg_head.predictor.`: the open_clip CLIP as `clip_model.*` (image tower `visual.*`,
the text tower at its top level, the unused `logit_scale`) and the decoder as
`transformer.*`. Our modules keep the official names below those prefixes, so loading
is a prefix rename (the prefixes: ovseg_ros.checkpoint.KEY_MAPS["sed"]).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ovseg_ros.checkpoint import KEY_MAPS, detect_sed_variant, load_state_dict, unwrap_state_dict
from ovseg_ros.modeling.sed.config import sed_config
from ovseg_ros.modeling.sed.sed import SED

SED_KEYS = KEY_MAPS["sed"]
__all__ = ["SED_KEYS", "detect_sed_variant", "load_sed", "load_sed_state_dict"]

def load_sed_state_dict(model: SED, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Load official-named (or our-named) tensors strictly (checkpoint.load_state_dict: every
    model tensor filled, no unknown key, equal shapes; CheckpointError naming the keys
    otherwise), a detectron2 file's "model" dict and DDP's `module.` prefix unwrapped.
    Returns the official keys skipped as unused by inference."""
    return load_state_dict(model, unwrap_state_dict(state_dict))


def load_sed(state_dict: Mapping[str, torch.Tensor], **config_overrides) -> SED:
    """The SED variant a state dict holds (official or our names; a detectron2 file's
    dict with "model" too), built and loaded strictly, in eval mode."""
    tensors = unwrap_state_dict(state_dict)
    model = SED(sed_config(detect_sed_variant(tensors), **config_overrides))
    load_sed_state_dict(model, tensors)
    return model.eval()
