"""EOV-Seg and FC-CLIP in plain PyTorch, one file per component.

Module names follow what each part is; `ovseg_ros.checkpoint` maps them to and from
the official detectron2 key names of each model.
"""

from ovseg_ros.modeling.eov_seg import EOVSeg, EOVSegOutput
from ovseg_ros.modeling.fc_clip import FCCLIP
from ovseg_ros.modeling.output import ModelOutput

__all__ = ["EOVSeg", "EOVSegOutput", "FCCLIP", "ModelOutput", "build_network"]


def build_network(config):
    """The network of a model config (EOVSegConfig or FCCLIPConfig), in eval mode."""
    network = FCCLIP(config) if config.family == "fc_clip" else EOVSeg(config)
    return network.eval()
