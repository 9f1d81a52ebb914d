"""EOV-Seg and FC-CLIP (panoptic), SAN and SED (semantic) in plain PyTorch: a folder per
model family (eov_seg/, fc_clip/, san/, sed/), one file per component, the shared CLIP
towers (clip_resnet, clip_convnext, clip_vit, clip_text) and layers (common, output)
beside them.

Module names follow what each part is; `ovseg_ros.checkpoint` maps them to and from
the official detectron2 key names of each model, and tells the family of a checkpoint.
"""

from ovseg_ros.modeling.eov_seg.eov_seg import EOVSeg, EOVSegOutput
from ovseg_ros.modeling.fc_clip.fc_clip import FCCLIP
from ovseg_ros.modeling.output import ModelOutput
from ovseg_ros.modeling.san.san import SAN
from ovseg_ros.modeling.sed.sed import SED

__all__ = ["FCCLIP", "SAN", "SED", "EOVSeg", "EOVSegOutput", "ModelOutput", "build_network"]


def build_network(config):
    """The network of a model config (EOVSegConfig, FCCLIPConfig, SANConfig, SEDConfig), in eval mode."""
    network = {"fc_clip": FCCLIP, "san": SAN, "sed": SED}.get(config.family, EOVSeg)(config)
    return network.eval()
