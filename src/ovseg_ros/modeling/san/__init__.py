"""SAN (Xu et al., CVPR 2023): a side adapter network beside a frozen CLIP ViT."""
