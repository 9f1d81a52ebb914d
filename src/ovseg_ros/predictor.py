"""The predictor facade: set a vocabulary, call it on images, get panoptic results.

    predictor = Predictor.from_checkpoint("eov_seg_r50.pth")
    predictor.set_vocabulary("person; forklift; pallet; floor", things="person; forklift; pallet")
    result = predictor(image)          # H x W x 3 uint8 RGB
    result.panoptic, result.segments, result.semantic
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ovseg_ros.checkpoint import check_model, describe_model, load_state_dict, read_state_dict
from ovseg_ros.config import InferenceConfig, ModelConfig, check_model as check_model_name, model_config
from ovseg_ros.backends import Engine, EngineOutput, create_engine, resolve_device
from ovseg_ros.modeling import EOVSeg, FCCLIP, build_network
from ovseg_ros.modeling.output import append_void
from ovseg_ros.modeling.sed.preprocess import semantic_scores
from ovseg_ros.postprocess import (
    class_segments, classify_masks, panoptic_fusion, segment_stats, semantic_probabilities, upsample_masks,
)
from ovseg_ros.preprocess import Batch, preprocess
from ovseg_ros.vocabulary import TextEmbedder, Vocabulary, VocabularyError, check_vocabulary

log = logging.getLogger(__name__)

STAND_IN_BANNER = (
    "\n" + "!" * 78 + "\n"
    "!!  STAND-IN RANDOM WEIGHTS: the model is untrained and its output is noise.  !!\n"
    "!!  Use this only for smoke tests and demos; pass a checkpoint for real use.  !!\n" + "!" * 78
)


class MissingWeightsError(ValueError):
    """Raised when no checkpoint is given and stand-in weights were not asked for."""


@dataclass(frozen=True)
class Segment:
    id: int  # value in the panoptic image
    category: int  # class index in the vocabulary
    label: str
    is_thing: bool
    score: float
    area: int  # pixels
    bbox: tuple[int, int, int, int]  # x, y, width, height
    centroid: tuple[float, float]  # x, y


@dataclass
class Prediction:
    panoptic: np.ndarray  # H x W int32 segment ids, 0 = no segment
    semantic: np.ndarray  # H x W int32 class index (argmax of the semantic scores), -1 = none
    segments: list[Segment]
    vocabulary_version: int
    probabilities: np.ndarray | None = None  # K x H x W semantic scores, when asked for
    # per segment (rows in segment order), unit length, in the CLIP text space the vocabulary
    # lives in: the query's class embedding, and CLIP's own mask-pooled view (NaN rows where
    # the model has none for that mask); None from code that does not set them
    embeddings: np.ndarray | None = None  # [N, D] float32
    clip_embeddings: np.ndarray | None = None  # [N, D] float32


@dataclass(frozen=True)
class VocabularyState:
    """Everything a frame needs from one vocabulary; swapped whole, never mutated."""

    vocabulary: Vocabulary
    version: int
    text_with_void: torch.Tensor  # [T+1, D]
    text: torch.Tensor  # [T, D]
    class_index: torch.Tensor  # [T]
    seen: torch.Tensor  # [K] bool
    is_thing: torch.Tensor  # [K] bool


@dataclass
class StageTimes:
    """Seconds spent per pipeline step in the last call (for diagnostics and benchmarks)."""

    values: dict[str, float] = field(default_factory=dict)


class Predictor:
    def __init__(
        self,
        engine: Engine,
        text_embedder: TextEmbedder,
        config: InferenceConfig | None = None,
        model_config: ModelConfig | None = None,
    ) -> None:
        self.engine = engine
        self.text_embedder = text_embedder
        self.config = config or InferenceConfig()
        self.device = engine.device
        self.model_config: ModelConfig = model_config or engine.model.config
        self._state: VocabularyState | None = None
        self._lock = threading.Lock()
        self._pixel_mean = torch.tensor(self.model_config.pixel_mean, device=self.device)
        self._pixel_std = torch.tensor(self.model_config.pixel_std, device=self.device)
        self._sed_text_cache: dict[str, torch.Tensor] = {}  # SED's [80, D] text feature per class string
        network = getattr(engine, "model", None)
        if self.model_config.family == "sed" and hasattr(network, "default_rejection"):
            from ovseg_ros.modeling.sed.config import TopKRejection

            topk = self.config.early_rejection_topk
            network.default_rejection = TopKRejection(topk) if topk > 0 else None

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path | None,
        variant: str | None = None,
        device: str = "cpu",
        config: InferenceConfig | None = None,
        stand_in_weights: bool = False,
        backend: str = "torch",
        engine_file: str | None = None,
        fp16: bool = False,
        cuda_graphs: bool = False,
        classes: str | Sequence[str] | None = None,
        things=None,
        model: str | None = None,
    ) -> "Predictor":
        """Build the model and load a checkpoint. Without one, refuse unless
        `stand_in_weights` is set, in which case weights are random and a banner says so.
        Compiled backends run `engine_file`; the model's text tower encodes vocabularies.
        With `classes` (and `things`) that vocabulary is activated. `model` ("eov_seg" or
        "fc_clip") and `variant` are read from the checkpoint; given, they are checked.

        Every cheap check comes before the model is built (seconds, not a model load):
        the device, the engine file, the checkpoint file and its variant, the vocabulary."""
        if backend == "torch":
            resolve_device(device)
        if engine_file and not Path(engine_file).is_file():
            raise FileNotFoundError(f"engine file not found: {engine_file}")
        weights = read_weights(checkpoint, variant, stand_in_weights, model)
        if classes is not None:
            check_vocabulary(classes, things)
        model = build_model_from(weights)
        engine = create_engine(backend, model, device, engine_file, fp16=fp16, cuda_graphs=cuda_graphs)
        predictor = cls(engine, TextEmbedder(model.text_encoder.to(engine.device)), config, model.config)
        if classes is not None:
            predictor.set_vocabulary(classes, things)
        return predictor

    @property
    def vocabulary(self) -> Vocabulary | None:
        state = self._state
        return state.vocabulary if state else None

    @property
    def vocabulary_version(self) -> int:
        state = self._state
        return state.version if state else 0

    def prepare_vocabulary(self, classes: str | Sequence[str], things=None) -> VocabularyState:
        """Validate and encode a vocabulary without activating it (raises VocabularyError)."""
        vocabulary = Vocabulary.parse(classes, things)
        whole = self.model_config.whole_class_names
        if self.model_config.semantic_only:  # every segment is a class region: no things
            vocabulary = Vocabulary(vocabulary.classes, tuple(False for _ in vocabulary.classes))
        self.text_embedder.check_fits(vocabulary, whole_class_names=whole)
        if self.model_config.family == "sed":  # [K, 80, D]: a text feature per template, no void
            text, class_index = self._sed_text(vocabulary.as_strings()), torch.arange(vocabulary.num_classes)
        else:
            text, class_index = self.text_embedder.classifier(vocabulary, whole_class_names=whole)
        check_rows = getattr(self.engine, "check_text_rows", None)  # compiled engines have a profile limit
        if check_rows is not None:
            try:
                check_rows(int(text.shape[0]))
            except ValueError as exc:
                raise VocabularyError(str(exc)) from exc
        text = text.to(self.device)
        with torch.inference_mode():
            text_with_void = text if self.model_config.family == "sed" else append_void(text, self.engine.void_embedding)
        return VocabularyState(
            vocabulary=vocabulary,
            version=-1,
            text_with_void=text_with_void,
            text=text,
            class_index=class_index.to(self.device),
            seen=torch.tensor(vocabulary.seen_in_training(), device=self.device),
            is_thing=torch.tensor(vocabulary.is_thing, device=self.device),
        )

    def _sed_text(self, names: list[str]) -> torch.Tensor:
        """SED's text features of class strings, [K, 80, D], encoding only names not seen
        before (a vocabulary change costs about 0.2 s per new class on a CPU)."""
        from ovseg_ros.modeling.sed.text import encode_class_names

        cache = self._sed_text_cache
        missing = list(dict.fromkeys(n for n in names if n not in cache))
        if missing:
            with torch.inference_mode():
                features = encode_class_names(self.text_embedder.text_encoder, missing, self.text_embedder.tokenizer)
            cache.update(zip(missing, features))
        return torch.stack([cache[n] for n in names])

    def activate(self, state: VocabularyState) -> int:
        """Swap a prepared vocabulary in; frames already running keep the old one."""
        with self._lock:
            version = self.vocabulary_version + 1
            self._state = VocabularyState(**{**state.__dict__, "version": version})
        return version

    def continue_versions(self, after: int) -> None:
        """Number the active vocabulary (and the next ones) on from `after`: a model loaded
        again keeps the versions its consumers have seen increasing."""
        with self._lock:
            if self._state is not None and self._state.version <= after:
                self._state = VocabularyState(**{**self._state.__dict__, "version": after + 1})

    def set_vocabulary(self, classes: str | Sequence[str], things=None) -> int:
        """Validate, encode and activate; on error the previous vocabulary stays."""
        return self.activate(self.prepare_vocabulary(classes, things))

    def __call__(self, image: np.ndarray, return_probabilities: bool = False) -> Prediction:
        return self.predict([image], return_probabilities)[0]

    def preprocess(self, images: Sequence[np.ndarray]) -> Batch:
        """The batch the engine takes: resized as configured, normalised, padded (to the
        engine's fixed size for compiled engines). SED: as its evaluation does, whatever
        the settings (short side 640 on the uint8 image, then 768 x 768)."""
        if self.model_config.family == "sed":
            from ovseg_ros.modeling.sed.preprocess import sed_batch

            return sed_batch(images, self.model_config, self.device)
        return preprocess(
            images,
            self._pixel_mean,
            self._pixel_std,
            self.config.min_size,
            self.config.max_size,
            self.model_config.size_divisibility,
            self.device,
            fixed_size=self.engine.input_size,
        )

    def predict(self, images: Sequence[np.ndarray], return_probabilities: bool = False, times: StageTimes | None = None) -> list[Prediction]:
        state = self._state
        if state is None:
            raise VocabularyError("no vocabulary set: call set_vocabulary first")
        clock = _Clock(self.device, times)
        batch = self.preprocess(images)
        clock.lap("preprocess")
        output = self.engine(batch.images, state.text)
        clock.lap("engine")
        results = self.postprocess(output, batch, state, return_probabilities)
        clock.lap("postprocess")
        return results

    @torch.inference_mode()
    def query_scores(self, output: EngineOutput, state: VocabularyState) -> torch.Tensor:
        """[B, Q, K+1] class log-probabilities of each query (void last), after the
        in/out-of-vocabulary ensemble."""
        cfg = self.config
        return classify_masks(
            output.class_embeddings,
            output.clip_embeddings,
            output.clip_mask_valid,
            state.text_with_void,
            state.class_index,
            state.seen,
            self.engine.class_logit_scale,
            self.engine.clip_logit_scale,
            cfg.ensemble_alpha,
            cfg.ensemble_beta,
            self.model_config.ensemble_on_valid_mask if cfg.ensemble_on_valid_mask is None else cfg.ensemble_on_valid_mask,
        )

    @torch.inference_mode()
    def score_embeddings(self, embeddings: np.ndarray, clip_embeddings: np.ndarray | None = None,
                         state: VocabularyState | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(class index [N], score [N]) of segments from their published embeddings
        (Prediction.embeddings / clip_embeddings, or Segment.embedding / clip_embedding),
        with the same ensemble the frame was labelled with. `state`: another vocabulary
        from prepare_vocabulary (new text, scored without changing the active one);
        default the active one. A void winner gives class -1."""
        state = state or self._state
        if state is None:
            raise VocabularyError("no vocabulary set: call set_vocabulary first")
        own = torch.as_tensor(np.asarray(embeddings, np.float32), device=self.device)[None]
        clip = np.full(own.shape[1:], np.nan, np.float32) if clip_embeddings is None else np.asarray(clip_embeddings, np.float32)
        valid = torch.as_tensor(~np.isnan(clip).any(-1), device=self.device)[None]
        clip = torch.as_tensor(np.nan_to_num(clip), device=self.device)[None]
        output = EngineOutput(own.new_zeros((1, own.shape[1], 1, 1)), own, clip, valid)
        scores, labels = self.query_scores(output, state)[0].softmax(-1).max(-1)
        num_classes = state.seen.shape[0]
        labels = torch.where(labels == num_classes, torch.full_like(labels, -1), labels)
        return labels.cpu().numpy(), scores.float().cpu().numpy()

    @torch.inference_mode()
    def postprocess(self, output: EngineOutput, batch: Batch, state: VocabularyState, return_probabilities: bool = False) -> list[Prediction]:
        cfg = self.config
        sed = output.semantic_logits is not None
        mask_cls = None if sed else self.query_scores(output, state)
        results = []
        for i in range(len(batch.input_sizes)):
            if sed:  # per-class scores: their sigmoid, the whole map resized to the image
                probabilities = semantic_scores(output.semantic_logits[i].float().sigmoid(), batch.input_sizes[i])
            else:
                masks = upsample_masks(output.mask_logits[i : i + 1], batch.padded_size, batch.resized_sizes[i], batch.input_sizes[i])[0]
                mask_probs = masks.sigmoid()  # shared by the semantic map and fusion
                probabilities = semantic_probabilities(mask_cls[i], masks, mask_probs)
            best, semantic = probabilities.max(0)
            semantic = torch.where(best >= cfg.semantic_threshold, semantic, torch.full_like(semantic, -1))
            if self.model_config.semantic_only:  # no instances: a segment per class present
                fused, embeddings = class_segments(probabilities, semantic, shares=not sed), (None, None)
            else:
                fused = panoptic_fusion(mask_cls[i], masks, state.is_thing, cfg.object_mask_threshold, cfg.overlap_threshold, mask_probs)
                embeddings = _segment_embeddings(output, i, fused.query)
            stats = segment_stats(fused.panoptic, fused.query.shape[0])
            results.append(self._to_prediction(state, fused, stats, semantic, probabilities, return_probabilities, embeddings))
        return results

    @staticmethod
    def _to_prediction(state, fused, stats, semantic, probabilities, return_probabilities, embeddings=(None, None)) -> Prediction:
        labels = state.vocabulary.labels
        category = fused.category.tolist()
        is_thing = fused.is_thing.tolist()
        score = fused.score.tolist()
        area = stats.area.tolist()
        box = stats.box.tolist()
        centroid = stats.centroid.tolist()
        segments = [
            Segment(
                id=i + 1,
                category=category[i],
                label=labels[category[i]],
                is_thing=is_thing[i],
                score=score[i],
                area=area[i],
                bbox=(box[i][0], box[i][1], box[i][2] - box[i][0] + 1, box[i][3] - box[i][1] + 1) if area[i] else (0, 0, 0, 0),
                centroid=(centroid[i][0], centroid[i][1]),
            )
            for i in range(len(category))
        ]
        return Prediction(
            panoptic=fused.panoptic.cpu().numpy(),
            semantic=semantic.to(torch.int32).cpu().numpy(),
            segments=segments,
            vocabulary_version=state.version,
            probabilities=probabilities.float().cpu().numpy() if return_probabilities else None,
            embeddings=embeddings[0],
            clip_embeddings=embeddings[1],
        )


def _segment_embeddings(output: EngineOutput, image: int, query: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Each segment's query embeddings, unit length: ([N, D] class, [N, D] CLIP view with
    NaN rows where its mask had none). One transfer per image."""
    query = query.long()
    own = F.normalize(output.class_embeddings[image].float()[query], dim=-1)
    clip = F.normalize(output.clip_embeddings[image].float()[query], dim=-1)
    clip = torch.where(output.clip_mask_valid[image][query][:, None], clip, torch.full_like(clip, float("nan")))
    return own.cpu().numpy(), clip.cpu().numpy()


@dataclass
class Weights:
    """A checkpoint's tensors (None: stand-in random weights) and the model they fit."""

    state_dict: dict[str, torch.Tensor] | None
    family: str  # "eov_seg" | "fc_clip"
    variant: str
    source: str


def read_weights(
    checkpoint: str | Path | None, variant: str | None = None, stand_in_weights: bool = False, model: str | None = None
) -> Weights:
    """Read and check a checkpoint file without building anything (a wrong path or file
    fails in a second); model and variant are taken from its keys or checked against
    `model` and `variant`. Stand-in weights default to EOV-Seg S (FC-CLIP L)."""
    if model is not None:
        check_model_name(model)
    if checkpoint and stand_in_weights:
        raise ValueError("give either a checkpoint or stand-in weights (--weights random), not both")
    if checkpoint:
        state_dict = read_state_dict(checkpoint)
        family, found = check_model(state_dict, model, variant)
        return Weights(state_dict, family, found, str(checkpoint))
    if not stand_in_weights:
        raise MissingWeightsError(
            "no checkpoint given. Download an EOV-Seg (or FC-CLIP) checkpoint (see README: 'Weights') and pass its path, "
            "or ask for stand-in random weights explicitly (--weights random / weights:=random) "
            "for a smoke test; their output is meaningless."
        )
    family = model or "eov_seg"
    return Weights(None, family, model_config(family, variant).variant, "stand-in random weights")


def build_model_from(weights: Weights) -> EOVSeg | FCCLIP:
    model = build_network(model_config(weights.family, weights.variant))
    if weights.state_dict is not None:
        skipped = load_state_dict(model, weights.state_dict)
        log.info("loaded %s: %s (%d unused keys skipped)", weights.source, describe_model(weights.family, weights.variant), len(skipped))
    else:
        log.warning(STAND_IN_BANNER)
        _randomize(model)
    return model


def build_model(
    checkpoint: str | Path | None, variant: str | None = None, stand_in_weights: bool = False, model: str | None = None
) -> EOVSeg | FCCLIP:
    """The model with a checkpoint's weights, or stand-in random weights when asked for."""
    return build_model_from(read_weights(checkpoint, variant, stand_in_weights, model))


def _randomize(model: EOVSeg | FCCLIP) -> None:
    """Deterministic random weights with sane scales (for smoke tests and demos).

    With plain random weights every mask covers a large, overlapping part of the image,
    and panoptic fusion (which keeps a segment only if it holds 80% of its own mask)
    keeps none: a demo would show nothing. So the final mask logits are shifted down by
    about four times the average pixel embedding's projection, measured once on a
    synthetic image: masks shrink and a few segments survive. The void embedding is
    zeroed (a neutral void logit); FC-CLIP's random queries all prefer even that, so its
    void points away from their mean class embedding. The output stays noise: this only
    makes the pipeline visible.
    """
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)
            elif name.endswith("bias"):
                param.zero_()  # default init draws from the global RNG: not reproducible
        if hasattr(model, "void_embedding"):
            model.void_embedding.zero_()
    if model.config.semantic_only:  # every pixel takes a class: nothing to make visible
        return
    if isinstance(model, FCCLIP):  # masks = mask_embed(query) . mask features
        feature, mask_bias = "pixel_decoder_mask_features", model.transformer_decoder.mask_embed.layers[-1].bias
    else:  # masks = fc_mask(query) . VAS-gated pixels
        feature, mask_bias = "vas", model.decoder.mask_heads[-1].fc_mask.bias
    blobs = torch.rand(1, 3, 4, 4, generator=generator) * 255
    image = F.interpolate(blobs, size=(128, 128), mode="bicubic", align_corners=False)
    image = (image - model.pixel_mean) / model.pixel_std
    text = F.normalize(torch.randn(8, model.config.clip.embed_dim, generator=generator), dim=-1)
    with torch.inference_mode():
        out = model(image, text, keep_features=True)
    mean_pixel = out.features[feature][0].mean((1, 2))
    with torch.no_grad():
        mask_bias -= 4.0 * mean_pixel / mean_pixel.pow(2).sum()
        if isinstance(model, FCCLIP):
            model.void_embedding.copy_(-F.normalize(out.class_embeddings[-1][0], dim=-1).mean(0, keepdim=True))


class _Clock:
    """Wall time per step; synchronises CUDA only when someone asks for times."""

    def __init__(self, device: torch.device, times: StageTimes | None) -> None:
        self._time = time.perf_counter
        self._device = device
        self._times = times
        self._last = self._time()

    def lap(self, name: str) -> None:
        if self._times is None:
            return
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        now = self._time()
        self._times.values[name] = now - self._last
        self._last = now
