"""The acceptance test: our implementation reproduces the published EOV-Seg on the
fixtures of $OVSEG_PARITY_DIR (default ../shared/parity/eovseg_r50), within the
tolerances of its README. Fails (never skips) when the fixtures are missing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg_ros.config import InferenceConfig
from ovseg_ros.engine import TorchEngine
from ovseg_ros.postprocess import class_logits, classify_masks, panoptic_fusion, semantic_probabilities, upsample_masks
from ovseg_ros.predictor import Predictor
from ovseg_ros.preprocess import preprocess
from ovseg_ros.vocabulary import TextEmbedder, Vocabulary

TOL_TEXT = 1e-4
TOL_CLS = 2e-3
TOL_MASK = 5e-3
TOL_MASK_MEAN = 1e-4
TOL_SEM = 2e-3


def _cases(parity_cases, kind):
    return [c for c in parity_cases if c["kind"] == kind]


def _max_diff(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape {a.shape} vs {b.shape}"
    return float(np.abs(a - b).max())


def test_fixture_lists_both_kinds(parity_cases):
    kinds = {c["kind"] for c in parity_cases}
    assert {"network", "postprocess"} <= kinds


@pytest.fixture(scope="module")
def network_results(parity_model, parity_folder, parity_cases):
    """Run every network case once (one thread, as the fixtures' noise floor assumes)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        embedder = TextEmbedder(parity_model.text_encoder)
        results = {}
        for case in _cases(parity_cases, "network"):
            data = np.load(parity_folder / f"{case['name']}.npz")
            vocabulary = Vocabulary.parse(case["classes"], case["things"])
            text, class_index = embedder.classifier(vocabulary)
            batch = preprocess([data["image"]], parity_model.pixel_mean, parity_model.pixel_std, min_size=0)
            with torch.inference_mode():
                # The network is compared on the fixture's own text classifier, so a text
                # mismatch cannot hide (or cause) a network mismatch; text is checked apart.
                fixture_text = torch.from_numpy(data["text_classifier"])
                out = parity_model(batch.images, fixture_text, keep_features=True)
                text_with_void = parity_model.text_with_void(fixture_text)
                stage_logits = [
                    class_logits(emb, text_with_void, scale, class_index, vocabulary.num_classes)[0]
                    for emb, scale in zip(out.class_embeddings, out.class_logit_scales)
                ]
                seen = torch.from_numpy(data["category_overlapping_mask"]).bool()
                mask_cls = classify_masks(
                    out.class_embeddings[-1], out.clip_embeddings, out.clip_mask_valid, text_with_void, class_index, seen,
                    out.class_logit_scales[-1], parity_model.clip_logit_scale, 0.4, 0.8,
                )[0]
                masks = upsample_masks(out.mask_logits[-1], batch.padded_size, batch.resized_sizes[0], batch.input_sizes[0])[0]
                sem_seg = semantic_probabilities(mask_cls, masks)
                thing = torch.zeros(vocabulary.num_classes, dtype=torch.bool)
                thing[case["things"]] = True
                fused = panoptic_fusion(mask_cls, masks, thing, 0.0, 0.8)
            results[case["name"]] = dict(
                data=data, case=case, text=text, batch=batch, out=out, stage_logits=stage_logits,
                sem_seg=sem_seg, fused=fused, vocabulary=vocabulary,
            )
        return results
    finally:
        torch.set_num_threads(before)


def test_text_classifier(network_results):
    for name, r in network_results.items():
        diff = _max_diff(r["text"], r["data"]["text_classifier"])
        assert diff <= TOL_TEXT, f"{name}: text classifier differs by {diff}"
        assert [len(s) for s in r["vocabulary"].classes] == r["data"]["num_templates"].tolist()


def test_padded_size(network_results):
    for name, r in network_results.items():
        assert list(r["batch"].padded_size) == r["case"]["padded_size"], name


def test_fingerprints(network_results):
    """Intermediate maps, to locate a mismatch before the outputs below disagree."""
    for name, r in network_results.items():
        data = r["data"]
        for module, tensor in r["out"].features.items():
            key = f"fp_{module}"
            if f"{key}_sample" not in data:
                continue
            assert list(tensor.shape) == data[f"{key}_shape"].tolist(), f"{name}/{module} shape"
            flat = tensor.flatten()
            sample = flat[torch.linspace(0, flat.numel() - 1, 4096).long()]
            scale = max(1.0, float(np.abs(data[f"{key}_sample"]).max()))
            diff = _max_diff(sample, data[f"{key}_sample"])
            assert diff <= 1e-3 * scale, f"{name}/{module} differs by {diff}"


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_stage_class_logits(network_results, stage):
    for name, r in network_results.items():
        diff = _max_diff(r["stage_logits"][stage], r["data"][f"stage{stage}_cls_logits"])
        assert diff <= TOL_CLS, f"{name} stage {stage}: class logits differ by {diff}"


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_stage_mask_logits(network_results, stage):
    for name, r in network_results.items():
        ours = r["out"].mask_logits[stage][0].numpy()
        ref = r["data"][f"stage{stage}_mask_logits"]
        diff = _max_diff(ours, ref)
        mean = float(np.abs(ours.astype(np.float64) - ref).mean())
        assert diff <= TOL_MASK, f"{name} stage {stage}: mask logits differ by {diff}"
        assert mean <= TOL_MASK_MEAN, f"{name} stage {stage}: mean mask difference {mean}"


def test_sem_seg(network_results):
    for name, r in network_results.items():
        diff = _max_diff(r["sem_seg"], r["data"]["sem_seg"])
        assert diff <= TOL_SEM, f"{name}: sem_seg differs by {diff}"


def test_network_panoptic(network_results):
    for name, r in network_results.items():
        np.testing.assert_array_equal(r["fused"].panoptic.numpy(), r["data"]["panoptic_seg"], err_msg=name)
        assert _segments_info(r["fused"]) == r["case"]["segments_info"], name


def test_seen_unseen_decision_matches_official(network_results):
    """Our own COCO synonym list decides seen/unseen as the official one does here."""
    for name, r in network_results.items():
        ours = [int(s) for s in r["vocabulary"].seen_in_training()]
        assert ours == r["data"]["category_overlapping_mask"].tolist(), name


def test_predictor_end_to_end(parity_model, parity_folder, parity_cases, one_thread):
    """The user-facing predictor (no resize) gives the fixture's sem_seg and panoptic."""
    predictor = Predictor(TorchEngine(parity_model), TextEmbedder(parity_model.text_encoder), InferenceConfig(min_size=0))
    for case in _cases(parity_cases, "network"):
        data = np.load(parity_folder / f"{case['name']}.npz")
        predictor.set_vocabulary(case["classes"], case["things"])
        result = predictor(data["image"], return_probabilities=True)
        assert _max_diff(result.probabilities, data["sem_seg"]) <= TOL_SEM, case["name"]
        np.testing.assert_array_equal(result.panoptic, data["panoptic_seg"])


def test_postprocess_cases(parity_folder, parity_cases):
    """Every crafted post-processing case: identical ids, pixels and categories."""
    cases = _cases(parity_cases, "postprocess")
    assert cases, "cases.json lists no post-processing case"
    for case in cases:
        data = np.load(parity_folder / f"{case['name']}.npz")
        thing = torch.zeros(case["num_classes"], dtype=torch.bool)
        thing[case["things"]] = True
        mask_cls, mask_pred = torch.from_numpy(data["mask_cls"]), torch.from_numpy(data["mask_pred"])
        fused = panoptic_fusion(mask_cls, mask_pred, thing, case["object_mask_threshold"], case["overlap_threshold"])
        np.testing.assert_array_equal(fused.panoptic.numpy(), data["panoptic_seg"], err_msg=case["name"])
        assert _segments_info(fused) == case["segments_info"], case["name"]
        assert _max_diff(semantic_probabilities(mask_cls, mask_pred), data["sem_seg"]) <= 1e-6, case["name"]


def _segments_info(fused) -> list[dict]:
    return [
        {"id": i + 1, "isthing": bool(t), "category_id": int(k)}
        for i, (t, k) in enumerate(zip(fused.is_thing.tolist(), fused.category.tolist()))
    ]
