"""EOV-Seg (AAAI 2025): frozen CLIP, lite neck with modulated deformable convolutions, Vocabulary-Aware Selection, light decoder."""
