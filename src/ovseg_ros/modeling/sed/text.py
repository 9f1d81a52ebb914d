"""SED's text side: the 80 ImageNet prompt templates, synonyms, and the text features
[K, 80, D] the cost volume is built from (one row per template, no template average)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ovseg_ros.vocabulary import default_tokenizer, encode_prompt_tokens, template_prefixes

# The 80 ImageNet templates of CLIP's prompt-engineering notebook, in the order of SED's
# `imagenet_templates.IMAGENET_TEMPLATES`: the order is the cost volume's channel order,
# which the decoder's first convolution was trained on.
IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)


def synonyms(class_name: str) -> list[str]:
    """SED's split of a class name: on ", " (comma and space) only, names used as given.

    "car, automobile" is two names, "trash can,garbage bin" one; a trailing space
    ("bed ") is kept (the tokenizer drops it anyway).
    """
    return class_name.split(", ")


def class_prompts(class_name: str, templates: Sequence[str] = IMAGENET_TEMPLATES) -> list[str]:
    """The prompts of one class, template-major: template 0 with each synonym, then 1..."""
    names = synonyms(class_name)
    return [template.format(name) for template in templates for name in names]


@torch.inference_mode()
def encode_class_names(
    text_encoder: torch.nn.Module,
    class_names: Sequence[str],
    tokenizer=None,
    templates: Sequence[str] = IMAGENET_TEMPLATES,
    batch_size: int = 256,
    share_prefixes: bool = True,
) -> torch.Tensor:
    """Text features [K, len(templates), D] of a vocabulary, as SED builds them.

    Each prompt's end-of-text feature is L2-normalised; a class with synonyms averages
    its synonyms' features per template and normalises again (a single name is used as
    it is). Equal to the published 77-token call up to float rounding, and fast:
    attention is causal, so the end-of-text feature depends only on the tokens up to it.
    Each prompt is cut to its own length (end-of-text position + 1) and prompts of one
    length run as one batch. With `share_prefixes`, each template's text before the class
    name ("a bad photo of a") is encoded once, and its keys and values are reused for
    every class, so only the name and the template's tail run per prompt
    (vocabulary.encode_prompt_tokens, as the other models' text). Identical prompts are
    encoded once.
    """
    tokenizer = tokenizer if tokenizer is not None else default_tokenizer()
    if not class_names:
        raise ValueError("no class names to encode")
    per_class = [class_prompts(name, templates) for name in class_names]
    template_of: dict[str, int] = {}
    for prompts in per_class:
        per_template = len(prompts) // len(templates)
        for i, prompt in enumerate(prompts):
            template_of.setdefault(prompt, i // per_template)
    unique = list(template_of)
    tokens = tokenizer(unique, context_length=getattr(text_encoder, "context_length", 77))
    template_rows = torch.tensor([template_of[p] for p in unique])
    prefixes = template_prefixes(text_encoder, tokenizer, templates) if share_prefixes else None
    features = encode_prompt_tokens(text_encoder, tokens, template_rows, prefixes, batch_size)
    device = features.device
    features = F.normalize(features, dim=-1)
    row_of = {prompt: i for i, prompt in enumerate(unique)}
    out = []
    for prompts in per_class:
        rows = torch.tensor([row_of[p] for p in prompts], device=device)
        class_features = features[rows].view(len(templates), -1, features.shape[-1])  # [templates, synonyms, D]
        if class_features.shape[1] == 1:
            out.append(class_features[:, 0])
        else:
            out.append(F.normalize(class_features.mean(dim=1), dim=-1))
    return torch.stack(out)
