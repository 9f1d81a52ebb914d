"""Measuring an exported file's fp32 layer set on calibration images, through the
predictor's own post-processing (the pipeline's results decide what fp16 may change).
The graph-level work - rounding, ranges, the search, the mixed-precision model - is in
mixed_precision.py, which the TensorRT backend uses and which needs no engine."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ovseg_ros.mixed_precision import Agreement, AgreementTargets, Fp32Set, compare, find_fp32_nodes, write_fp32_set


def pipeline_results(predictor, output, batch, state) -> list[dict]:
    """What `compare` needs, per image, from an engine output through the predictor's
    own post-processing."""
    predictions = predictor.postprocess(output, batch, state)
    if output.semantic_logits is not None:  # SED: no queries; its per-class maps stand in for the masks
        masks = (output.semantic_logits > 0).cpu().numpy()
        query_classes = output.semantic_logits.argmax(1).flatten(1).cpu().numpy()
    else:
        query_classes = predictor.query_scores(output, state).argmax(-1).cpu().numpy()
        masks = (output.mask_logits > 0).cpu().numpy()
    return [
        {"panoptic": p.panoptic, "semantic": p.semantic, "query_classes": query_classes[i], "masks": masks[i]}
        for i, p in enumerate(predictions)
    ]


class Calibration:
    """Calibration inputs (preprocessed batches with their vocabularies) and the fp32
    results of the exported model on them; `evaluate` scores another model proto."""

    def __init__(self, model, predictor, cases: Sequence[tuple[object, object]]) -> None:
        """model: the fp32 ONNX proto; predictor: any Predictor of the same weights (its
        post-processing is used); cases: (Batch, VocabularyState) pairs."""
        self.model = model
        self.predictor = predictor
        self.cases = list(cases)
        self.feeds = [self._feed(batch, state) for batch, state in self.cases]
        self.reference = self._results(model)

    def _feed(self, batch, state) -> dict[str, np.ndarray]:
        names = {i.name for i in self.model.graph.input}
        feed = {"images": batch.images.detach().float().cpu().numpy()}
        if "text_embeddings" in names:
            feed["text_embeddings"] = state.text.detach().float().cpu().numpy()
        return feed

    def _results(self, model) -> list[list[dict]]:
        import onnxruntime as ort
        import torch

        from ovseg_ros.backends import EngineOutput

        names = [o.name for o in model.graph.output]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keeps every rounding Cast
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        results = []
        for (batch, state), feed in zip(self.cases, self.feeds):
            output = EngineOutput.from_outputs(names, [torch.from_numpy(a) for a in session.run(names, feed)])
            results.append(pipeline_results(self.predictor, output, batch, state))
        return results

    def evaluate(self, model) -> Agreement:
        candidate = self._results(model)
        return Agreement.mean([compare(r, c) for ref, cand in zip(self.reference, candidate) for r, c in zip(ref, cand)])

    def find_fp32_nodes(self, targets: AgreementTargets = AgreementTargets()) -> Fp32Set:
        return find_fp32_nodes(self.model, self.feeds, self.evaluate, targets)


def sample_images() -> list[np.ndarray]:
    """The package's two sample photos (a warehouse, a street), RGB uint8."""
    from importlib.resources import files

    import cv2

    images = []
    for name in ("warehouse.jpg", "street.jpg"):
        data = np.frombuffer(files("ovseg_ros").joinpath("assets", name).read_bytes(), np.uint8)
        images.append(cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
    return images


def calibrate_export(onnx_path, model, images: Sequence[np.ndarray] | None = None, classes=None, things=None,
                     targets: AgreementTargets = AgreementTargets()) -> Fp32Set:
    """Measure the fp32 set of an exported file on `images` (default: the sample photos)
    with a vocabulary (default: the node's), and keep it in the file's metadata."""
    import onnx

    from ovseg_ros.backends import create_engine
    from ovseg_ros.config import DEFAULT_CLASSES, InferenceConfig
    from ovseg_ros.predictor import Predictor
    from ovseg_ros.vocabulary import TextEmbedder

    engine = create_engine("onnxruntime", model, "cpu", str(onnx_path))
    predictor = Predictor(engine, TextEmbedder(model.text_encoder), InferenceConfig(), model.config)
    state = predictor.prepare_vocabulary(classes or DEFAULT_CLASSES, things)
    cases = [(predictor.preprocess([image]), state) for image in (images if images is not None else sample_images())]
    proto = onnx.load(str(onnx_path))
    found = Calibration(proto, predictor, cases).find_fp32_nodes(targets)
    write_fp32_set(onnx_path, found, proto)
    return found
