"""SED's test-time options (its architecture, SEDConfig, is in ovseg_ros.config with the
other models')."""

from __future__ import annotations

from dataclasses import dataclass

from ovseg_ros.config import SEDConfig, sed_config

__all__ = ["SEDConfig", "StaticTopKRejection", "TopKRejection", "sed_config"]


@dataclass(frozen=True)
class TopKRejection:
    """Category early rejection as published (`TEST.FAST_INFERENCE`, `TEST.TOPK`).

    After stages 0, 1 and 2, a class survives when it is among the `topk` highest
    logits at one pixel at least; the next stages run on the survivors only, so the
    number of classes (and every shape after stage 0) depends on the image. Rejected
    classes score exactly 0. eval.sh's fast setting is topk = 8.
    """

    topk: int = 8

    def __post_init__(self) -> None:
        if self.topk < 1:
            raise ValueError(f"topk must be at least 1, got {self.topk}")


@dataclass(frozen=True)
class StaticTopKRejection:
    """A static-shape form of early rejection for exported graphs (ONNX, TensorRT).

    After stage 0 exactly `n_keep` classes (or n_keep[s] after stage s, never more than
    the classes left) are kept, whatever the image: the classes ranked best by their
    best per-pixel rank (0 = the top logit at some pixel; ties broken by the larger
    maximum logit), kept in vocabulary order. Every shape depends only on the number
    of classes and n_keep, not on the data.

    How it differs from the published, dynamic TopKRejection:
    - the dynamic form keeps every class that is in the top `topk` at some pixel,
      however many they are; this keeps n_keep. With n_keep >= the number the dynamic
      form keeps, the kept set contains all of the dynamic survivors (they are the
      classes of best rank < topk); with fewer, the worst-ranked survivors are dropped.
    - with `mask_rejected` False (default), every kept class is scored, including
      kept classes the dynamic rule would reject, and they take part in the class
      attention, so all scores differ from the dynamic form's; n_keep >= the number of
      classes is then no rejection at all.
    - with `mask_rejected` True, kept classes that the dynamic rule rejects (best rank
      >= topk among the classes still in play) only fill their slot: they are left out
      of the class attention (zero keys and values) and score 0, so with n_keep >= the
      dynamic survivor count the scores equal the dynamic form's up to float rounding.
    """

    topk: int = 8
    n_keep: int | tuple[int, int, int] = 32
    mask_rejected: bool = False

    def __post_init__(self) -> None:
        if self.topk < 1:
            raise ValueError(f"topk must be at least 1, got {self.topk}")
        keep = self.keep_per_stage()
        if len(keep) != 3 or min(keep) < 1:
            raise ValueError(f"n_keep must be a positive int or three positive ints, got {self.n_keep}")

    def keep_per_stage(self) -> tuple[int, ...]:
        return (self.n_keep,) * 3 if isinstance(self.n_keep, int) else tuple(self.n_keep)
