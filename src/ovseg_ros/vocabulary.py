"""Vocabularies: parsing and validation, prompt templates, and cached CLIP text embeddings.

A vocabulary is a list of classes; each class has one or more synonyms
("car, automobile"). Each synonym is expanded with the 14 ViLD templates, encoded by
CLIP's text tower, averaged over templates; a class scores as its best synonym.

Normalisation (documented, applied everywhere): Unicode NFKC, runs of white space
collapsed to one space, ends trimmed, lower case (CLIP's tokenizer lower-cases anyway).
Empty items left by stray separators ("person; car;", "car,, automobile") are ignored.
Rejected with a reason: no classes, control characters, ';' inside a name given as a
list entry, a name whose longest prompt does not fit CLIP's 77-token context, a name
used twice after normalisation, things that name no class.

Things: when none are given, a class is a thing when one of its names is the name or a
synonym of a COCO thing class ("person; car; tree" -> person and car); the default
vocabulary comes with its own things (DEFAULT_THINGS).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from ovseg_ros.coco_classes import coco_thing_names, coco_training_names
from ovseg_ros.config import DEFAULT_CLASSES, DEFAULT_THINGS

VILD_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)

MAX_CLASSES = 1024



class VocabularyError(ValueError):
    """A vocabulary that cannot be used; the message says why."""


def normalize_name(name: str) -> str:
    text = unicodedata.normalize("NFKC", name)
    return re.sub(r"\s+", " ", text).strip().lower()


@dataclass(frozen=True)
class Vocabulary:
    """Validated classes. `classes[i]` are the synonyms of class i; the first one is its label."""

    classes: tuple[tuple[str, ...], ...]
    is_thing: tuple[bool, ...]
    things_inferred: bool = False  # is_thing came from the COCO thing names, not from the caller

    @property
    def thing_labels(self) -> list[str]:
        return [synonyms[0] for synonyms, thing in zip(self.classes, self.is_thing) if thing]

    @property
    def labels(self) -> list[str]:
        return [synonyms[0] for synonyms in self.classes]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        """Every synonym of every class, class by class."""
        return [name for synonyms in self.classes for name in synonyms]

    def seen_in_training(self) -> list[bool]:
        """Whether any synonym of a class is a COCO panoptic training name."""
        training = coco_training_names()
        return [any(name in training for name in synonyms) for synonyms in self.classes]

    def describe(self) -> str:
        """'3 classes; things (inferred): person, car' - for replies and logs."""
        things = ", ".join(self.thing_labels) or "none"
        return f"{self.num_classes} classes; things{' (inferred)' if self.things_inferred else ''}: {things}"

    def as_strings(self) -> list[str]:
        return [", ".join(synonyms) for synonyms in self.classes]

    @classmethod
    def parse(
        cls,
        classes: str | Sequence[str],
        things: str | Sequence[str] | Sequence[int] | None = None,
        max_classes: int = MAX_CLASSES,
    ) -> "Vocabulary":
        """classes: "person; car, automobile; tree" or ["person", "car, automobile", "tree"].
        things: the same forms naming classes (any synonym), or class indices; None or
        empty: inferred (classes with a COCO thing name)."""
        entries = _split_classes(classes)
        if not entries:
            raise VocabularyError("the vocabulary is empty: give at least one class name")
        if len(entries) > max_classes:
            raise VocabularyError(f"{len(entries)} classes is more than the limit of {max_classes}")
        parsed: list[tuple[str, ...]] = []
        owner: dict[str, int] = {}
        for index, entry in enumerate(entries):
            synonyms = []
            for raw in entry.split(","):
                name = _checked_name(raw, index, entry)
                if not name:
                    continue
                if name in owner:
                    where = "twice in the same class" if owner[name] == index else f"in classes {owner[name]} and {index}"
                    raise VocabularyError(f"name {name!r} appears {where} (after normalisation)")
                owner[name] = index
                synonyms.append(name)
            parsed.append(tuple(synonyms))
        indices = _thing_indices(things, owner, len(parsed))
        if indices is None and tuple(parsed) == _default_classes():
            indices = _thing_indices(DEFAULT_THINGS, owner, len(parsed))  # the default vocabulary comes with its things
        if indices is None:
            thing_names = coco_thing_names()
            flags = tuple(any(name in thing_names for name in synonyms) for synonyms in parsed)
            return cls(tuple(parsed), flags, things_inferred=True)
        named = set(indices)
        return cls(tuple(parsed), tuple(i in named for i in range(len(parsed))))


@functools.cache
def _default_classes() -> tuple[tuple[str, ...], ...]:
    return Vocabulary.parse(DEFAULT_CLASSES, DEFAULT_THINGS).classes


def _split_classes(classes: str | Sequence[str]) -> list[str]:
    """Class entries, without the empty ones stray separators leave ("a; b;", "a;; b", "a, ,")."""
    if isinstance(classes, str):
        return [item for item in classes.split(";") if not _blank(item)]
    if not isinstance(classes, Sequence):
        raise VocabularyError(f"classes must be a string or a list of strings, not {type(classes).__name__}")
    for item in classes:
        if not isinstance(item, str):
            raise VocabularyError(f"class names must be strings, got {type(item).__name__}")
    return [item for item in classes if not _blank(item)]


def _blank(entry: str) -> bool:
    return not normalize_name(entry.replace(",", " "))


def _checked_name(raw: str, index: int, entry: str) -> str:
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") and not ch.isspace() for ch in raw):
        raise VocabularyError(f"class {index} ({entry!r}) contains control or unassigned characters")
    name = normalize_name(raw)
    if ";" in name:
        raise VocabularyError(f"class {index} ({entry!r}): ';' separates classes and cannot be part of a name")
    return name


def _thing_indices(things, owner: dict[str, int], num_classes: int) -> list[int] | None:
    """Indices of the classes `things` names; None when things are to be inferred."""
    if things is None:
        return None
    if isinstance(things, str):
        things = [t for t in re.split(r"[;,]", things) if t.strip()]
    elif not isinstance(things, Sequence):
        raise VocabularyError(f"things must be a string or a list, not {type(things).__name__}")
    if all(isinstance(t, str) and _blank(t) for t in things):
        return None  # nothing named
    indices = []
    for item in things:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise VocabularyError(f"things must be class names or indices, got {item!r}")
        if isinstance(item, int):
            if not 0 <= item < num_classes:
                raise VocabularyError(f"thing index {item} is outside 0..{num_classes - 1}")
            indices.append(item)
            continue
        for part in item.split(","):
            name = normalize_name(part)
            if not name:
                continue
            if name not in owner:
                raise VocabularyError(f"thing {name!r} is not one of the classes")
            indices.append(owner[name])
    return indices


def check_vocabulary(classes, things=None, context_length: int = 77, tokenizer=None) -> Vocabulary:
    """Parse and check that every prompt fits CLIP's context, without a model: a bad
    vocabulary is refused in well under a second, before any weights are loaded."""
    vocabulary = Vocabulary.parse(classes, things)
    _check_prompt_lengths(tokenizer if tokenizer is not None else default_tokenizer(), vocabulary.names, context_length)
    return vocabulary


def _check_prompt_lengths(tokenizer, names: Iterable[str], context_length: int) -> None:
    """VocabularyError for the first name whose longest prompt does not fit the context."""
    longest = max(VILD_TEMPLATES, key=len)
    for name in names:
        count = len(tokenizer.encode(longest.format(name))) + 2  # start and end tokens
        if count > context_length:
            raise VocabularyError(f"name {name[:40]!r}... is too long: its prompts need {count} tokens, CLIP takes {context_length}")


def prompts_for(name: str) -> list[str]:
    return [template.format(name) for template in VILD_TEMPLATES]


class TextEmbedder:
    """CLIP text embeddings per name, cached, encoded with prompts cut to their length.

    Changing the vocabulary only encodes names not seen before; the template average of
    each name is kept (normalised), so the classifier for any vocabulary is a gather.
    """

    def __init__(self, text_encoder: torch.nn.Module, tokenizer=None, batch_size: int = 64) -> None:
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer if tokenizer is not None else default_tokenizer()
        self.batch_size = batch_size
        self._cache: dict[str, torch.Tensor] = {}
        self._prefix_state = None

    @property
    def device(self) -> torch.device:
        return next(self.text_encoder.parameters()).device

    def check_fits(self, vocabulary: Vocabulary, whole_class_names: bool = False) -> None:
        """Refuse names whose longest prompt would not fit CLIP's context."""
        names = vocabulary.as_strings() if whole_class_names else vocabulary.names
        uncached = (name for name in names if name not in self._cache)
        _check_prompt_lengths(self.tokenizer, uncached, self.text_encoder.context_length)

    def embed_names(self, names: Iterable[str]) -> torch.Tensor:
        """[N, D] normalised template-averaged embeddings, encoding only uncached names."""
        names = list(names)
        missing = list(dict.fromkeys(n for n in names if n not in self._cache))
        if missing:
            self._cache.update(zip(missing, self._encode(missing)))
        return torch.stack([self._cache[n] for n in names])

    def classifier(self, vocabulary: Vocabulary, whole_class_names: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(text embeddings [T, D], class index of each row [T]) for a vocabulary: a row
        per synonym, or with `whole_class_names` (SAN) one per class, its synonyms kept
        together in one prompt ("a photo of a car, automobile.")."""
        if whole_class_names:
            return self.embed_names(vocabulary.as_strings()), torch.arange(vocabulary.num_classes, device=self.device)
        names = vocabulary.names
        class_index = [i for i, synonyms in enumerate(vocabulary.classes) for _ in synonyms]
        return self.embed_names(names), torch.tensor(class_index, dtype=torch.long, device=self.device)

    @torch.inference_mode()
    def _encode(self, names: list[str]) -> torch.Tensor:
        """Every template's prefix ("a photo of a") is encoded once per embedder and its
        keys/values reused, so only each name's own tokens and the template's tail run
        through the transformer, all templates in one batch."""
        num_templates = len(VILD_TEMPLATES)
        tokens = self.tokenizer([p for name in names for p in prompts_for(name)])  # row = name * 14 + template
        template = torch.arange(num_templates).repeat(len(names))
        features = encode_prompt_tokens(self.text_encoder, tokens, template, self._prefixes(), self.batch_size)
        features = F.normalize(features, dim=-1).view(len(names), num_templates, -1).mean(1)
        return F.normalize(features, dim=-1)

    def _prefixes(self):
        """The VILD templates' prefixes (template_prefixes), computed once (CLIP is frozen)."""
        if self._prefix_state is None:
            self._prefix_state = template_prefixes(self.text_encoder, self.tokenizer, VILD_TEMPLATES)
        return self._prefix_state


def template_prefixes(text_encoder: torch.nn.Module, tokenizer, templates: Sequence[str]):
    """(prefix tokens [T, P] zero padded, lengths [T], per-layer (k, v) [T, heads, P, d])
    of each template's text before the class name ("a photo of a"), encoded in one batch
    (the padding is on the right: causal attention keeps it out of the real tokens)."""
    sot = tokenizer.encoder["<start_of_text>"]
    prefixes = [[sot] + tokenizer.encode(t.split("{}")[0]) for t in templates]
    tokens = torch.zeros(len(prefixes), max(len(p) for p in prefixes), dtype=torch.long)
    for i, prefix in enumerate(prefixes):
        tokens[i, : len(prefix)] = torch.tensor(prefix)
    with torch.inference_mode():
        caches = text_encoder.prefix_cache(tokens.to(next(text_encoder.parameters()).device))
    return tokens, torch.tensor([len(p) for p in prefixes]), caches


@torch.inference_mode()
def encode_prompt_tokens(text_encoder: torch.nn.Module, tokens: torch.Tensor, template_rows: torch.Tensor,
                         prefixes=None, batch_size: int = 64) -> torch.Tensor:
    """End-of-text features [N, D] (not normalised) of tokenised prompts [N, 77], row i made
    from template `template_rows[i]`. CLIP's text attention is causal, so the result is the
    full-context one up to float rounding: each prompt is cut after its end-of-text token,
    and with `prefixes` (template_prefixes) a prompt that starts with its template's prefix
    runs only its own tokens after it, prompts of similar suffix length in one batch. The
    rest (a name whose tokens merged across the seam, or every prompt without `prefixes`)
    run whole, a batch per length."""
    device = text_encoder.text_projection.device
    lengths = tokens.argmax(-1) + 1  # end-of-text has the largest token id
    features = torch.empty(tokens.shape[0], text_encoder.text_projection.shape[1], device=device)
    shares = torch.zeros(tokens.shape[0], dtype=torch.bool)
    if prefixes is not None:
        prefix_tokens, prefix_lengths, caches = prefixes
        row_prefix = prefix_lengths[template_rows]
        width = prefix_tokens.shape[1]
        in_prefix = torch.arange(width)[None, :] < row_prefix[:, None]
        shares = ((tokens[:, :width] == prefix_tokens[template_rows]) | ~in_prefix).all(-1) & (lengths > row_prefix)
        rows = torch.nonzero(shares).squeeze(1)
        rows = rows[torch.argsort(lengths[rows] - row_prefix[rows])]  # similar suffix lengths share a batch
        for start in range(0, rows.numel(), batch_size):
            chunk = rows[start : start + batch_size]
            suffix_len = int((lengths[chunk] - row_prefix[chunk]).max())
            index = (row_prefix[chunk, None] + torch.arange(suffix_len)).clamp(max=tokens.shape[1] - 1)
            suffix = tokens[chunk].gather(1, index).to(device)
            rows_cache = [(k[template_rows[chunk]], v[template_rows[chunk]]) for k, v in caches]
            features[chunk.to(device)] = text_encoder.forward_after_prefix(rows_cache, suffix, row_prefix[chunk].to(device)).float()
    rest = torch.nonzero(~shares).squeeze(1)
    for length in torch.unique(lengths[rest]).tolist():
        same = rest[lengths[rest] == length]
        for start in range(0, same.numel(), batch_size):
            chunk = same[start : start + batch_size]
            features[chunk.to(device)] = text_encoder(tokens[chunk, :length].to(device)).float()
    return features


def encode_prompts_full_context(text_encoder: torch.nn.Module, tokenizer, names: Sequence[str]) -> torch.Tensor:
    """The published way: every prompt padded to 77 tokens, batches of 128. Used as the
    baseline in benchmarks and as the reference in tests."""
    prompts = [p for name in names for p in prompts_for(name)]
    with torch.inference_mode():
        tokens = tokenizer(prompts)
        device = next(text_encoder.parameters()).device
        features = torch.cat([text_encoder(tokens[i : i + 128].to(device)) for i in range(0, len(prompts), 128)])
    features = F.normalize(features, dim=-1).view(len(names), len(VILD_TEMPLATES), -1).mean(1)
    return F.normalize(features, dim=-1)


@functools.cache
def default_tokenizer():
    """open_clip's CLIP BPE tokenizer (its vocabulary ships inside the package)."""
    try:
        from open_clip.tokenizer import SimpleTokenizer
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImportError("the CLIP tokenizer needs open_clip_torch: pip install open_clip_torch") from exc
    return SimpleTokenizer()
