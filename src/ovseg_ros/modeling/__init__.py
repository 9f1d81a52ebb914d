"""EOV-Seg and FC-CLIP (panoptic), SAN and SED (semantic) in plain PyTorch, one file per
component.

Module names follow what each part is; `ovseg_ros.checkpoint` maps them to and from
the official detectron2 key names of each model.
"""

from ovseg_ros.modeling.eov_seg import EOVSeg, EOVSegOutput
from ovseg_ros.modeling.fc_clip import FCCLIP
from ovseg_ros.modeling.output import ModelOutput
from ovseg_ros.modeling.san.san import SAN
from ovseg_ros.modeling.sed.sed import SED

__all__ = ["EOVSeg", "EOVSegOutput", "FCCLIP", "SAN", "SED", "ModelOutput", "build_network"]


def build_network(config):
    """The network of a model config (EOVSegConfig, FCCLIPConfig, SANConfig, SEDConfig), in eval mode."""
    network = {"fc_clip": FCCLIP, "san": SAN, "sed": SED}.get(config.family, EOVSeg)(config)
    return network.eval()
