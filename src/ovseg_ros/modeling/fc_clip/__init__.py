"""FC-CLIP (Yu et al., NeurIPS 2023): one frozen convolutional CLIP, MSDeformAttn pixel decoder, masked-attention decoder."""
