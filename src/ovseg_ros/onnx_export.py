"""Export the network (not the text tower, not post-processing) to ONNX, opset 17.

Inputs: `images` [B, 3, H, W] (normalised, padded; fixed at export) and, for EOV-Seg,
whose Vocabulary-Aware Selection looks at the vocabulary, `text_embeddings` [T, D] with
T dynamic, so a new vocabulary never needs a new export (SED: [K, 80, D], its cost
volume's text). FC-CLIP's and SAN's networks do not see the vocabulary (their mask
embeddings meet the text in post-processing): their files have the images input only.
Outputs: last-stage `mask_logits`, `class_embeddings`, `clip_embeddings` and
`clip_mask_valid` (SED: `semantic_logits` [B, K, h, w]); post-processing runs outside
on them. What post-processing needs from
the weights (void embedding, logit scales) and a hash of the weights travel in the
model's metadata.

One file for every TensorRT from 8.6 on (JetPack 6.0) and for onnxruntime:
- opset 17, the newest that TensorRT 8.6 reads, where ReduceMean/ReduceMax/ReduceL2
  take their axes as attributes (8.6 ignores the opset-18 axes input and reduces all);
- no plugin ops: the modulated deformable convolutions are GridSample + MatMul
  (modeling/eov_seg/deform_conv.py), not ONNX DeformConv (no importer in 8.6 or 10.0);
- shapes folded into constants (onnx-graphsurgeon), so no shape arithmetic is left on
  the fixed image size and none reads the dynamic text rows.
`tensorrt_support.py` checks a file against each version's documented parser support.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch
from torch import nn

OPSET = 17
FOLD_SIZE_LIMIT = 1 << 18  # bytes: larger constant results (attention masks) stay ops, the file stays small
INPUT_NAMES = ("images", "text_embeddings")
OUTPUT_NAMES = ("mask_logits", "class_embeddings", "clip_embeddings", "clip_mask_valid")
SEMANTIC_OUTPUT_NAMES = ("semantic_logits",)  # SED: per-class logits [B, K, h, w]


def input_names(model: nn.Module) -> tuple[str, ...]:
    """The network's inputs: FC-CLIP's and SAN's do not take the vocabulary (EOV-Seg's VAS
    and SED's cost volume do: SED's text input is [K, 80, D], a feature per template)."""
    return INPUT_NAMES if model.family in ("eov_seg", "sed") else INPUT_NAMES[:1]


def output_names(model: nn.Module) -> tuple[str, ...]:
    return SEMANTIC_OUTPUT_NAMES if model.family == "sed" else OUTPUT_NAMES


def text_row_shape(model: nn.Module) -> tuple[int, ...]:
    """The shape of one vocabulary row of the text input: [D], or SED's [80, D]."""
    config = model.config
    return (config.num_templates, config.embed_dim) if model.family == "sed" else (config.clip.embed_dim,)


class ExportedNetwork(nn.Module):
    """The network's forward with plain tensor outputs (the final prediction only); SED's
    with the early rejection the file is exported with (None: off)."""

    def __init__(self, model: nn.Module, rejection=None) -> None:
        super().__init__()
        self.model = model
        self.rejection = rejection

    def forward(self, images: torch.Tensor, text_embeddings: torch.Tensor | None = None):
        if self.model.family == "sed":
            return self.model(images, text_embeddings, self.rejection).logits
        out = self.model(images, text_embeddings)
        return out.mask_logits[-1], out.class_embeddings[-1], out.clip_embeddings, out.clip_mask_valid


def weights_hash(model: nn.Module) -> str:
    """sha256 over the network's tensors (text tower excluded): ties an exported file to
    the checkpoint the text embeddings come from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith("text_encoder."):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def postprocess_constants(model: nn.Module) -> dict:
    if model.family == "sed":  # its scores need nothing from the weights
        return {}
    return {
        "void_embedding": model.void_embedding.detach().cpu().flatten().tolist(),
        "class_logit_scale": float(model.class_logit_scale.detach()),
        "clip_logit_scale": float(model.clip_logit_scale.detach()),
    }


def check_export_size(height: int, width: int, divisor: int = 32) -> None:
    if height % divisor or width % divisor or height <= 0 or width <= 0:
        raise ValueError(f"export size {height}x{width} must be positive multiples of {divisor}")


def export_onnx(model: nn.Module, path: str | Path, height: int, width: int, batch: int = 1, num_text_rows: int = 8,
                early_rejection_keep: int = 0, early_rejection_topk: int = 8) -> Path:
    """Write `path` (.onnx). height and width must be multiples of 32 (SED: its 768 x 768).
    SED with `early_rejection_keep` N: its early rejection in static form (the N best
    classes after each of the first three stages, those outside the top
    `early_rejection_topk` everywhere masked out), for vocabularies of N classes or more."""
    rejection = None
    if model.family == "sed":
        if (height, width) != tuple(model.config.clip_resolution):
            raise ValueError(f"SED's network input is {model.config.clip_resolution[0]}x{model.config.clip_resolution[1]}, "
                             f"not {height}x{width}: every image is resized to it")
        if early_rejection_keep:
            from ovseg_ros.modeling.sed.config import StaticTopKRejection

            rejection = StaticTopKRejection(early_rejection_topk, early_rejection_keep, mask_rejected=True)
            num_text_rows = max(num_text_rows, early_rejection_keep + 1)  # traced with more classes than it keeps
    elif early_rejection_keep:
        raise ValueError("early rejection is SED's: other models have none")
    else:
        check_export_size(height, width, model.config.size_divisibility)
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    images = torch.zeros(batch, 3, height, width)
    names = input_names(model)
    text = torch.nn.functional.normalize(torch.randn(num_text_rows, *text_row_shape(model)), dim=-1)
    inputs = (images, text)[: len(names)]
    with torch.no_grad(), warnings.catch_warnings():
        # tracing notes that sizes become constants: intended, the export size is fixed
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            ExportedNetwork(model, rejection).eval(),  # the exporter restores the wrapper's mode afterwards
            inputs,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=list(names),
            output_names=list(output_names(model)),
            dynamic_axes={"text_embeddings": {0: "text_rows"}} if "text_embeddings" in names else None,
            do_constant_folding=True,
        )
    exported = fold_constants(onnx.load(str(path)))
    metadata = {
        "ovseg_format": "1",
        "model": model.family,
        "variant": model.config.variant,
        "inputs": json.dumps(list(names)),
        "input_size": json.dumps([batch, 3, height, width]),
        "text_dim": str(model.config.clip.embed_dim),
        "text_row_shape": json.dumps(list(text_row_shape(model))),
        "outputs": json.dumps(list(output_names(model))),
        "min_text_rows": str(early_rejection_keep or 1),
        "weights_sha256": weights_hash(model),
        "postprocess": json.dumps(postprocess_constants(model)),
    }
    for key, value in metadata.items():
        entry = exported.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(exported, str(path))
    return path


def fold_constants(model):
    """Shape arithmetic on the fixed image size becomes constants (onnx-graphsurgeon,
    which evaluates constant subgraphs with onnxruntime); repeated until nothing folds."""
    import onnx
    import onnx_graphsurgeon as gs
    import onnxruntime
    from onnx_graphsurgeon.logger import G_LOGGER

    onnxruntime.set_default_logger_severity(3)  # its optimiser's notes on every folded subgraph
    G_LOGGER.severity = G_LOGGER.ERROR
    count = len(model.graph.node)
    while True:
        graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model, data_prop=True))
        graph.fold_constants(size_threshold=FOLD_SIZE_LIMIT).cleanup().toposort()
        model = gs.export_onnx(graph)
        if len(model.graph.node) == count:
            break
        count = len(model.graph.node)
    return model


def postprocess_tensors(metadata: dict, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(void embedding [1, D], class logit scale, CLIP logit scale) from read_metadata's dict."""
    constants = metadata["postprocess"]
    if not constants:  # SED: nothing; zeros keep the engines' attributes defined
        return torch.zeros(1, int(metadata["text_dim"]), device=device), torch.tensor(0.0, device=device), torch.tensor(0.0, device=device)
    return (
        torch.tensor(constants["void_embedding"], device=device).view(1, -1),
        torch.tensor(constants["class_logit_scale"], device=device),
        torch.tensor(constants["clip_logit_scale"], device=device),
    )


def read_metadata(path: str | Path) -> dict:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get("ovseg_format") != "1":
        raise ValueError(f"{path} was not exported by ovseg export (no ovseg metadata)")
    meta["input_size"] = json.loads(meta["input_size"])
    meta["inputs"] = json.loads(meta.get("inputs", json.dumps(list(INPUT_NAMES))))  # files from before FC-CLIP had both
    meta.setdefault("model", "eov_seg")
    meta["postprocess"] = json.loads(meta["postprocess"])
    meta["text_dim"] = int(meta["text_dim"])
    meta["text_row_shape"] = json.loads(meta.get("text_row_shape", json.dumps([meta["text_dim"]])))
    meta["outputs"] = json.loads(meta.get("outputs", json.dumps(list(OUTPUT_NAMES))))
    meta["min_text_rows"] = int(meta.get("min_text_rows", 1))
    return meta
