"""The vocabulary services' logic: validate, encode, swap; never raise to the caller."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple, Sequence

from ovseg_ros.vocabulary import VocabularyError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VocabularyReply:
    success: bool
    message: str
    version: int


def set_vocabulary(predictor, classes: Sequence[str], things: Sequence[str]) -> VocabularyReply:
    """Activate a new vocabulary, or refuse with the reason and keep the old one.

    Encoding runs in the caller's thread (the service's), not the frame worker's; frames
    in flight finish with the vocabulary they started with.
    """
    try:
        version = predictor.set_vocabulary(list(classes), list(things) if things else None)
    except VocabularyError as exc:
        return VocabularyReply(False, f"vocabulary refused: {exc}", predictor.vocabulary_version)
    except Exception as exc:  # an encoding failure must not take the node down
        log.exception("vocabulary update failed")
        return VocabularyReply(False, f"vocabulary update failed: {type(exc).__name__}: {exc}", predictor.vocabulary_version)
    return VocabularyReply(True, f"vocabulary {version}: {predictor.vocabulary.describe()}", version)


class ActiveVocabulary(NamedTuple):
    classes: list[str]  # one entry per class, synonyms comma-separated
    things: list[str]  # labels of the thing classes
    version: int
    seen: list[bool]  # per class: seen in training (the published decision)


def get_vocabulary(predictor) -> ActiveVocabulary:
    vocabulary = predictor.vocabulary
    if vocabulary is None:
        return ActiveVocabulary([], [], 0, [])
    return ActiveVocabulary(vocabulary.as_strings(), vocabulary.thing_labels, predictor.vocabulary_version, vocabulary.seen_in_training())
