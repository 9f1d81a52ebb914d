"""EOV-Seg in plain PyTorch, one file per component.

Module names follow what each part is; `ovseg_ros.checkpoint` maps them to and from
the official detectron2 key names.
"""

from ovseg_ros.modeling.eov_seg import EOVSeg, EOVSegOutput

__all__ = ["EOVSeg", "EOVSegOutput"]
