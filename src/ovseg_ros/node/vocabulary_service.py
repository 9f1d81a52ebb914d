"""The vocabulary services' logic: validate, encode, swap; never raise to the caller."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

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
        version = predictor.set_vocabulary(list(classes), list(things))
    except VocabularyError as exc:
        return VocabularyReply(False, f"vocabulary refused: {exc}", predictor.vocabulary_version)
    except Exception as exc:  # an encoding failure must not take the node down
        log.exception("vocabulary update failed")
        return VocabularyReply(False, f"vocabulary update failed: {type(exc).__name__}: {exc}", predictor.vocabulary_version)
    vocabulary = predictor.vocabulary
    things_count = sum(vocabulary.is_thing)
    return VocabularyReply(
        True, f"vocabulary {version}: {vocabulary.num_classes} classes ({things_count} things)", version
    )


def get_vocabulary(predictor) -> tuple[list[str], list[str], int]:
    """(classes with synonyms, labels of the thing classes, version)."""
    vocabulary = predictor.vocabulary
    if vocabulary is None:
        return [], [], 0
    things = [label for label, thing in zip(vocabulary.labels, vocabulary.is_thing) if thing]
    return vocabulary.as_strings(), things, predictor.vocabulary_version
