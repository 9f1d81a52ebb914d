"""SED's text side: the 80 ImageNet prompt templates, synonyms, and the text features
[K, 80, D] the cost volume is built from (one row per template, no template average)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

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
    length run as one batch. With `share_prefixes` (a CLIPTextEncoder and open_clip's
    tokenizer), each template's text before the class name ("a bad photo of a") is
    encoded once, and its keys and values are reused for every class, so only the name
    and the template's tail run per prompt. Identical prompts are encoded once.
    """
    if tokenizer is None:
        from ovseg_ros.vocabulary import default_tokenizer

        tokenizer = default_tokenizer()
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
    lengths = tokens.argmax(dim=-1) + 1  # end-of-text has the largest token id
    device = text_encoder.text_projection.device
    features = torch.empty(len(unique), text_encoder.text_projection.shape[1], device=device)
    done = torch.zeros(len(unique), dtype=torch.bool)
    if share_prefixes and _can_share_prefixes(text_encoder, tokenizer):
        done = _encode_after_prefixes(text_encoder, tokenizer, templates, tokens, lengths,
                                      torch.tensor([template_of[p] for p in unique]), features, batch_size)
    rest = torch.nonzero(~done).squeeze(1)
    for length in torch.unique(lengths[rest]).tolist():
        rows = rest[lengths[rest] == length]
        for start in range(0, rows.numel(), batch_size):
            chunk = rows[start : start + batch_size]
            features[chunk.to(device)] = text_encoder(tokens[chunk, :length].to(device)).float()
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


def _can_share_prefixes(text_encoder, tokenizer) -> bool:
    return hasattr(tokenizer, "encode") and hasattr(text_encoder, "forward_after_prefix") and hasattr(text_encoder, "transformer")


def _encode_after_prefixes(text_encoder, tokenizer, templates, tokens, lengths, template_rows, features, batch_size):
    """Fill `features` for the prompts whose tokens start with their template's prefix
    tokens (a name can merge with the seam; those are left to the caller); returns
    which rows were filled."""
    device = features.device
    start_token = int(tokens[0, 0])
    prefixes = [[start_token] + tokenizer.encode(template.split("{}")[0]) for template in templates]
    width = max(len(p) for p in prefixes)
    prefix_tokens = torch.zeros(len(prefixes), width, dtype=tokens.dtype)
    for i, prefix in enumerate(prefixes):
        prefix_tokens[i, : len(prefix)] = torch.tensor(prefix, dtype=tokens.dtype)
    prefix_lengths = torch.tensor([len(p) for p in prefixes])
    caches = _prefix_caches(text_encoder, prefix_tokens.to(device))

    row_prefix = prefix_lengths[template_rows]
    in_prefix = torch.arange(width)[None, :] < row_prefix[:, None]
    matches = ((tokens[:, :width] == prefix_tokens[template_rows]) | ~in_prefix).all(-1)
    shares = matches & (lengths > row_prefix)
    suffix_lengths = lengths - row_prefix
    rows_sharing = torch.nonzero(shares).squeeze(1)
    for length in torch.unique(suffix_lengths[rows_sharing]).tolist():
        rows = rows_sharing[suffix_lengths[rows_sharing] == length]
        for start in range(0, rows.numel(), batch_size):
            chunk = rows[start : start + batch_size]
            index = row_prefix[chunk, None] + torch.arange(length)
            suffix = tokens[chunk].gather(1, index).to(device)
            templates_of_chunk = template_rows[chunk].to(device)
            cache = [(k[templates_of_chunk], v[templates_of_chunk]) for k, v in caches]
            features[chunk.to(device)] = text_encoder.forward_after_prefix(cache, suffix, row_prefix[chunk].to(device)).float()
    return shares


def _prefix_caches(text_encoder, prefix_tokens: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (keys, values) [T, heads, P, d] of all templates' prefixes in one batch
    (zero padded on the right: causal attention keeps padding out of the real tokens)."""
    x = text_encoder.token_embedding(prefix_tokens) + text_encoder.positional_embedding[: prefix_tokens.shape[1]]
    caches = []
    for block in text_encoder.transformer.resblocks:
        heads = block.attn.num_heads
        empty = x.new_empty(1, heads, 0, x.shape[-1] // heads)
        x, k, v = block.forward_after(x, empty, empty)
        caches.append((k, v))
    return caches
