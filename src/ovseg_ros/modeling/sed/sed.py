"""SED (CVPR 2024, "SED: A Simple Encoder-Decoder for Open-Vocabulary Semantic
Segmentation"): a ConvNeXt CLIP, a cost volume of per-pixel CLIP embeddings against
per-template text features, and a hierarchical decoder with optional category early
rejection. Plain PyTorch; checkpoints of the official code load through the project's
loader (ovseg_ros.checkpoint; `keys.load_sed` for a state dict in hand).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ovseg_ros.modeling.clip_text import CLIPTextEncoder
from ovseg_ros.modeling.sed.config import SEDConfig, StaticTopKRejection, TopKRejection
from ovseg_ros.modeling.sed.cost_volume import cost_volume
from ovseg_ros.modeling.sed.decoder import SEDDecoder
from ovseg_ros.modeling.sed.image_encoder import DenseCLIPConvNeXt
from ovseg_ros.modeling.sed.rejection import static_selection, topk_survivors
from ovseg_ros.modeling.sed.text import encode_class_names

Rejection = TopKRejection | StaticTopKRejection


@dataclass
class SEDOutput:
    """Per-stage logits over the whole vocabulary, whatever was rejected.

    stage_logits: 4 tensors [B, K, h, w] (24, 48, 96, 192 for a 768 input); a class
    not evaluated at a stage (rejected before it) holds -inf there, so its score
    sigmoid(-inf) is exactly 0. active: 4 tensors [B, K] bool, the classes evaluated
    at each stage (active[s + 1] = kept after stage s). features: intermediate tensors
    when asked for, named and laid out as the parity fixtures' fingerprints.
    """

    stage_logits: list[torch.Tensor]
    active: list[torch.Tensor]
    features: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def logits(self) -> torch.Tensor:
        return self.stage_logits[-1]

    @property
    def scores(self) -> torch.Tensor:
        """[B, K, h, w] in [0, 1]: sigmoid of the last stage, exactly 0 for rejected classes."""
        return torch.sigmoid(self.stage_logits[-1])

    @property
    def kept_after_stage(self) -> list[torch.Tensor]:
        return self.active[1:]


# select(stage, logits [B, n, h, w], valid [B, n] | None) -> (positions [B, n'] | None, valid [B, n'] | None)
Selector = Callable[[int, torch.Tensor, "torch.Tensor | None"], "tuple[torch.Tensor | None, torch.Tensor | None]"]


class SED(nn.Module):
    """images [B, 3, 768, 768] (CLIP-normalised) + text features [K, 80, D] -> SEDOutput."""

    family = "sed"

    def __init__(self, config: SEDConfig | None = None) -> None:
        super().__init__()
        self.config = config = config if config is not None else SEDConfig()
        # what a call without `rejection` does (the engines call model(images, text)):
        # set from InferenceConfig.early_rejection_topk by the predictor, or for an export
        self.default_rejection: Rejection | None = None
        self.image_encoder = DenseCLIPConvNeXt(config.timm_name, config.embed_dim, config.projection)
        self.text_encoder = CLIPTextEncoder(
            config.vocab_size, config.context_length, config.text_width, config.text_layers, config.text_heads,
            config.embed_dim, quick_gelu=False,
        )
        res2, res3, res4, _ = self.image_encoder.channels
        self.decoder = SEDDecoder(config, (res4, res3, res2))

    def encode_text(self, class_names: Sequence[str], tokenizer=None) -> torch.Tensor:
        """[K, 80, D] text features of a vocabulary, from this model's own text tower."""
        return encode_class_names(self.text_encoder, class_names, tokenizer)

    def encode_image(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """stem, res2..res5 and clip_vis_dense of CLIP-normalised images; reusable across
        vocabularies and rejection settings."""
        return self.image_encoder(images)

    def forward(
        self,
        images: torch.Tensor,
        text_features: torch.Tensor,
        rejection: Rejection | None | str = "default",
        pooling_size: tuple[int, int] | None = None,
        return_features: bool = False,
    ) -> SEDOutput:
        """rejection "default": the model's `default_rejection` (None unless set)."""
        if isinstance(rejection, str):
            rejection = self.default_rejection
        return self.decode(self.encode_image(images), text_features, rejection, pooling_size, return_features)

    def decode(
        self,
        image_features: dict[str, torch.Tensor],
        text_features: torch.Tensor,
        rejection: Rejection | None = None,
        pooling_size: tuple[int, int] | None = None,
        return_features: bool = False,
    ) -> SEDOutput:
        """Everything after the image encoder. rejection: None (every class through every
        stage), TopKRejection (published, data-dependent shapes, images one at a time) or
        StaticTopKRejection (fixed shapes, for exported graphs)."""
        pooling = tuple(pooling_size if pooling_size is not None else self.config.pooling_sizes)
        features: dict[str, torch.Tensor] | None = {} if return_features else None
        dense = image_features["clip_vis_dense"]
        num_images, num_classes = dense.shape[0], text_features.shape[0]
        cost = cost_volume(dense, text_features)  # [B, K, T, H, W]
        embedded = self.decoder.embed_cost_volume(cost)
        guidance = self.decoder.appearance_guidance(image_features["res4"], image_features["res3"], image_features["res2"])
        corr_guidance = self.decoder.cost_volume_guidance(cost)
        if features is not None:
            features["text_features"] = text_features
            features["cost_volume"] = cost.transpose(1, 2)  # official layout [B, T, K, H, W]
            features["corr_embed"] = embedded.view(num_images, num_classes, *embedded.shape[1:]).transpose(1, 2)
            for i, (g, c) in enumerate(zip(guidance, corr_guidance)):
                features[f"guidance{i}"] = g
                features[f"corr_guidance{i}"] = c
        if isinstance(rejection, TopKRejection):
            if num_images > 1 and features is not None:
                raise ValueError("return_features with dynamic early rejection takes one image at a time")
            per_image = [
                self._run_stages(
                    embedded[b * num_classes : (b + 1) * num_classes],
                    [g[b : b + 1] for g in guidance],
                    [c[b * num_classes : (b + 1) * num_classes] for c in corr_guidance],
                    num_classes, pooling, self._dynamic_selector(rejection), features,
                )
                for b in range(num_images)
            ]
            stage_logits = [torch.cat([out[0][s] for out in per_image]) for s in range(4)]
            active = [torch.cat([out[1][s] for out in per_image]) for s in range(4)]
        elif isinstance(rejection, StaticTopKRejection):
            stage_logits, active = self._run_stages(
                embedded, guidance, corr_guidance, num_classes, pooling, self._static_selector(rejection), features
            )
        elif rejection is None:
            stage_logits, active = self._run_stages(embedded, guidance, corr_guidance, num_classes, pooling, None, features)
        else:
            raise TypeError(f"rejection must be None, TopKRejection or StaticTopKRejection, not {type(rejection).__name__}")
        return SEDOutput(stage_logits, active, features if features is not None else {})

    @staticmethod
    def _dynamic_selector(rejection: TopKRejection) -> Selector:
        def select(stage, logits, valid):
            keep = topk_survivors(logits[0], rejection.topk)
            return torch.nonzero(keep).view(1, -1), None

        return select

    @staticmethod
    def _static_selector(rejection: StaticTopKRejection) -> Selector:
        keep_per_stage = rejection.keep_per_stage()

        def select(stage, logits, valid):
            slots, in_topk = static_selection(logits, keep_per_stage[stage], rejection.topk, valid)
            return slots, (in_topk if rejection.mask_rejected else None)

        return select

    def _run_stages(
        self,
        x: torch.Tensor,
        guidance: list[torch.Tensor],
        corr_guidance: list[torch.Tensor],
        num_classes: int,
        pooling: tuple[int, int],
        select: Selector | None,
        features: dict[str, torch.Tensor] | None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The four stages on the classes `select` keeps after stages 0, 1, 2 (None: all).

        Slots are tracked as class indices per image ([B, n]); a class's cost-volume
        guidance rows are gathered by its index, so later stages see the survivors only.
        """
        num_images = guidance[0].shape[0]
        device = x.device
        slots = None  # None: all classes, in order
        valid = None
        results = []
        logits = self._stage_logits(self.decoder.head0, x, num_images)
        results.append((slots, valid, logits))
        for stage, block in enumerate(self.decoder.blocks):
            if select is not None:
                positions, valid = select(stage, logits, valid)
                if positions is not None:
                    x = _gather_classes(x, positions)
                    slots = positions if slots is None else slots.gather(1, positions)
            cg = corr_guidance[stage] if slots is None else _gather_classes(corr_guidance[stage], slots)
            x = block(x, guidance[stage], cg, pooling, valid)
            logits = self._stage_logits(self.decoder.heads[stage + 1], x, num_images)
            if features is not None:
                features[f"decoder{stage + 1}"] = x
            results.append((slots, valid, logits))
        stage_logits, active = [], []
        for stage, (slots, valid, logits) in enumerate(results):
            if features is not None:
                features[f"stage{stage}_logits"] = logits.flatten(0, 1)[:, None]
            full, evaluated = _scatter_classes(logits, slots, valid, num_classes, device)
            stage_logits.append(full)
            active.append(evaluated)
        return stage_logits, active

    @staticmethod
    def _stage_logits(head: nn.Module, x: torch.Tensor, num_images: int) -> torch.Tensor:
        out = head(x)  # [B * n, 1, h, w]
        return out.view(num_images, -1, *out.shape[-2:])


def _gather_classes(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """x [B * n, ...] (image-major), positions [B, m] into each image's n rows -> [B * m, ...]."""
    num_images = positions.shape[0]
    per_image = x.view(num_images, -1, *x.shape[1:])
    rows = torch.arange(num_images, device=x.device)[:, None]
    return per_image[rows, positions].flatten(0, 1)


def _scatter_classes(
    logits: torch.Tensor, slots: torch.Tensor | None, valid: torch.Tensor | None, num_classes: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the evaluated slots [B, n, h, w] -> over the vocabulary [B, K, h, w],
    -inf for classes not evaluated (or only filling a slot), and the evaluated mask."""
    num_images = logits.shape[0]
    if valid is not None:
        logits = logits.masked_fill(~valid[:, :, None, None], float("-inf"))
    if slots is None:
        evaluated = torch.ones(num_images, num_classes, dtype=torch.bool, device=device)
        return logits, evaluated if valid is None else valid
    index = slots[:, :, None, None].expand_as(logits)
    full = logits.new_full((num_images, num_classes, *logits.shape[-2:]), float("-inf")).scatter(1, index, logits)
    marks = torch.ones_like(slots, dtype=torch.bool) if valid is None else valid
    evaluated = torch.zeros(num_images, num_classes, dtype=torch.bool, device=device).scatter(1, slots, marks)
    return full, evaluated
