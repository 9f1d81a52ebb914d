"""The acceptance test: our EOV-Seg and FC-CLIP reproduce the published code on every
case of every fixture folder under $OVSEG_PARITY_DIR (default ../shared/parity:
eovseg_r50 = EOV-Seg S, eovseg_r50x4 = M, eovseg_convnext_l = L, fcclip_r50 = FC-CLIP R50,
fcclip_convnext_l = FC-CLIP L), within the tolerances of its README, with the stand-in
weights loaded through the user-facing checkpoint loader (model and variant read from
the file). Fails (never skips) when a folder or file is missing.

Set OVSEG_PARITY_REPORT=<file> to get the measured differences as JSON lines.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from support import PANOPTIC_FAMILIES, check_parity_folder, load_cases, parity_folders, write_stand_in_checkpoint

from ovseg_ros.config import InferenceConfig
from ovseg_ros.backends import TorchEngine
from ovseg_ros.postprocess import class_logits, classify_masks, panoptic_fusion, semantic_probabilities, upsample_masks
from ovseg_ros.predictor import Predictor, build_model
from ovseg_ros.preprocess import preprocess
from ovseg_ros.vocabulary import TextEmbedder, Vocabulary

TOL_TEXT = 1e-4
TOL_CLS = 2e-3
TOL_MASK = 5e-3
TOL_MASK_MEAN = 1e-4
TOL_SEM = 2e-3

FOLDERS = parity_folders(PANOPTIC_FAMILIES)


def report(folder, case, array, max_diff, mean_diff=None, tolerance=None):
    path = os.environ.get("OVSEG_PARITY_REPORT")
    if path:
        row = {"folder": folder.name, "case": case, "array": array, "max": max_diff, "mean": mean_diff, "tolerance": tolerance}
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


def max_diff(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape {a.shape} vs {b.shape}"
    return float(np.abs(a - b).max()) if a.size else 0.0


@pytest.fixture(scope="module", params=FOLDERS, ids=[f.name for f in FOLDERS])
def run(request, tmp_path_factory):
    """One folder: its stand-in checkpoint, the model loaded from it as a user would (the
    variant read from the file), and every network case run once with one thread (the
    fixtures' noise floor assumes it)."""
    folder = request.param
    family, variant = check_parity_folder(folder)
    cases = load_cases(folder)
    checkpoint = write_stand_in_checkpoint(folder, tmp_path_factory.mktemp(folder.name) / "stand_in.pth")
    model = build_model(checkpoint)  # model and variant from the checkpoint's keys
    checkpoint.unlink()  # up to 2 GB: gone once loaded
    assert (model.family, model.config.variant) == (family, variant), f"{folder.name} loaded as {model.family} {model.config.variant}"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        embedder = TextEmbedder(model.text_encoder)
        results = {}
        for case in (c for c in cases if c["kind"] == "network"):
            data = np.load(folder / f"{case['name']}.npz")
            vocabulary = Vocabulary.parse(case["classes"], case["things"])
            text, class_index = embedder.classifier(vocabulary)
            batch = preprocess([data["image"]], model.pixel_mean, model.pixel_std, min_size=0)
            with torch.inference_mode():
                # The network is compared on the fixture's own text classifier, so a text
                # mismatch cannot hide (or cause) a network mismatch; text is checked apart.
                fixture_text = torch.from_numpy(data["text_classifier"])
                out = model(batch.images, fixture_text, keep_features=True)
                text_with_void = model.text_with_void(fixture_text)
                stage_logits = [
                    class_logits(emb, text_with_void, scale, class_index, vocabulary.num_classes)[0]
                    for emb, scale in zip(out.class_embeddings, out.class_logit_scales)
                ]
                seen = torch.from_numpy(data["category_overlapping_mask"]).bool()
                mask_cls = classify_masks(
                    out.class_embeddings[-1], out.clip_embeddings, out.clip_mask_valid, text_with_void, class_index, seen,
                    out.class_logit_scales[-1], model.clip_logit_scale, 0.4, 0.8, model.config.ensemble_on_valid_mask,
                )[0]
                masks = upsample_masks(out.mask_logits[-1], batch.padded_size, batch.resized_sizes[0], batch.input_sizes[0])[0]
                sem_seg = semantic_probabilities(mask_cls, masks)
                thing = torch.zeros(vocabulary.num_classes, dtype=torch.bool)
                thing[case["things"]] = True
                fused = panoptic_fusion(mask_cls, masks, thing, 0.0, 0.8)
            results[case["name"]] = dict(
                data=data, case=case, text=text, batch=batch, out=out, stage_logits=stage_logits,
                sem_seg=sem_seg, fused=fused, vocabulary=vocabulary, text_with_void=text_with_void, class_index=class_index,
            )
        prefix = "stage" if family == "eov_seg" else "layer"  # EOV-Seg: 3 stages; FC-CLIP: learnt queries + 9 layers
        yield dict(folder=folder, family=family, cases=cases, model=model, results=results, prefix=prefix)
    finally:
        torch.set_num_threads(before)


def test_fixture_lists_network_cases(run):
    assert run["results"], f"{run['folder']}/cases.json lists no network case"


def test_text_classifier(run):
    for name, r in run["results"].items():
        diff = max_diff(r["text"], r["data"]["text_classifier"])
        report(run["folder"], name, "text_classifier", diff, tolerance=TOL_TEXT)
        assert diff <= TOL_TEXT, f"{name}: text classifier differs by {diff}"
        assert [len(s) for s in r["vocabulary"].classes] == r["data"]["num_templates"].tolist()


def test_padded_size(run):
    for name, r in run["results"].items():
        assert list(r["batch"].padded_size) == r["case"]["padded_size"], name


def test_fingerprints(run):
    """Intermediate maps, to locate a mismatch before the outputs below disagree."""
    checked = 0
    for name, r in run["results"].items():
        data = r["data"]
        for module, tensor in r["out"].features.items():
            key = f"fp_{module}"
            if f"{key}_sample" not in data:
                continue
            assert list(tensor.shape) == data[f"{key}_shape"].tolist(), f"{name}/{module} shape"
            flat = tensor.flatten()
            sample = flat[torch.linspace(0, flat.numel() - 1, 4096).long()]
            scale = max(1.0, float(np.abs(data[f"{key}_sample"]).max()))
            diff = max_diff(sample, data[f"{key}_sample"])
            report(run["folder"], name, key, diff, tolerance=1e-3 * scale)
            assert diff <= 1e-3 * scale, f"{name}/{module} differs by {diff}"
            checked += 1
    assert checked >= (7 if run["family"] == "eov_seg" else 10) * len(run["results"]), "fingerprints missing from the fixtures"


def predictions(run) -> list[int]:
    first = next(iter(run["results"].values()))
    count = len(first["out"].mask_logits)
    assert count == (3 if run["family"] == "eov_seg" else 10)
    assert all(f"{run['prefix']}{i}_cls_logits" in first["data"] for i in range(count))
    return list(range(count))


def test_class_logits_of_every_prediction(run):
    for name, r in run["results"].items():
        for i in predictions(run):
            key = f"{run['prefix']}{i}_cls_logits"
            ours = r["stage_logits"][i].numpy().astype(np.float64)
            diff = max_diff(ours, r["data"][key])
            mean = float(np.abs(ours - r["data"][key]).mean())
            report(run["folder"], name, key, diff, mean, TOL_CLS)
            off, near_tie = class_logit_mismatches(ours, r["data"][key], r["out"].mask_logits[i][0])
            explained = len(off) <= 2 and near_tie == off
            if not explained and run["family"] == "fc_clip":
                flip = attention_flip_explains(run["model"], r, i)
                assert flip is not None, f"{name} {key}: class logits differ by {diff} on queries {off}, not a threshold flip"
                report(run["folder"], name, f"{key}_after_attention_flip", *flip)
                break  # the later layers were compared on the flipped run
            assert explained, f"{name} {key}: class logits differ by {diff} on queries {off} (near-tie pixels only on {near_tie})"
            if off:
                kept = np.setdiff1d(np.arange(ours.shape[0]), off)
                report(run["folder"], name, f"{key}_without_threshold_flips_{off}", max_diff(ours[kept], r["data"][key][kept]))
            assert mean <= 1e-4, f"{name} {key}: mean class logit difference {mean}"


def class_logit_mismatches(ours, ref, masks) -> tuple[list[int], list[int]]:
    """Queries whose class logits are off, and those of them that have a near-tie pixel.

    A query whose class is pooled over its own mask (logit > 0) moves when one of its
    pixels sits within rounding of 0 and lands on the other side on another CPU (seen on
    AVX-512: FC-CLIP L indoor layer 2, one pixel at |logit| < 1e-4). Accepted only for a
    few queries that have such a pixel, and reported."""
    off = [int(q) for q in np.flatnonzero(np.abs(ours - ref).max(axis=1) > TOL_CLS)]
    return off, [q for q in off if bool((masks[q].abs() < FLIP_MARGIN).any())]


def test_mask_logits_of_every_prediction(run):
    explains = threshold_flip_explains if run["family"] == "eov_seg" else attention_flip_explains
    for name, r in run["results"].items():
        stages = r["out"].mask_logits
        for i in predictions(run):
            key = f"{run['prefix']}{i}_mask_logits"
            ours = stages[i][0].numpy()
            ref = r["data"][key]
            diff = max_diff(ours, ref)
            mean = float(np.abs(ours.astype(np.float64) - ref).mean())
            report(run["folder"], name, key, diff, mean, TOL_MASK)
            if diff > TOL_MASK or mean > TOL_MASK_MEAN:
                flip = explains(run["model"], r, i)
                assert flip is not None, f"{name} {key}: mask logits differ by {diff} (mean {mean}), not a threshold flip"
                report(run["folder"], name, f"{key}_after_threshold_flip", *flip)
                break  # the later stages were compared on the flipped run
            assert diff <= TOL_MASK, f"{name} {key}: mask logits differ by {diff}"
            assert mean <= TOL_MASK_MEAN, f"{name} {key}: mean mask difference {mean}"


FLIP_MARGIN = 1e-4  # a mask logit this close to 0 has no reliable side across CPUs (|x| noise ~1e-5)


def threshold_flip_explains(model, r, stage: int):
    """EOV-Seg's decoder stages pool pixels under hard masks (sigmoid > 0.5) of the
    previous masks, and self-attention then spreads any change to every query: one
    pixel whose logit is within rounding of 0 lands on another side on another CPU's
    kernels (seen on AVX-512 machines: M indoor). This re-runs the decoder with each
    such near-tie pixel of the previous masks flipped, one at a time; if one run then
    matches the reference at every later stage within tolerance, the mismatch is that
    flip. Returns (max diff, mean diff, flipped logit) of the matching run, or None."""
    decoder = model.decoder
    features = r["out"].features
    data = r["data"]
    with torch.inference_mode():
        pixels = features["vas"]
        vit_pixels = decoder.output_upscaling(features["vit_layer"])
        kernels = decoder.object_kernels.weight.unsqueeze(0).expand(pixels.shape[0], -1, -1)
        masks = torch.einsum("bnc,bchw->bnhw", kernels, pixels)
        for s in range(stage):
            _, masks, kernels = decoder.mask_heads[s](pixels, vit_pixels, kernels, masks)
        near = torch.nonzero(masks.abs().flatten() < FLIP_MARGIN).flatten()[:32]
        for index in near.tolist():
            flipped = masks.clone()
            flipped.view(-1)[index] = -flipped.view(-1)[index] if flipped.view(-1)[index] != 0 else -FLIP_MARGIN
            m, k, diffs = flipped, kernels, []
            for s in range(stage, len(decoder.mask_heads)):
                _, m, k = decoder.mask_heads[s](pixels, vit_pixels, k, m)
                ref = data[f"stage{s}_mask_logits"]
                diffs.append((max_diff(m[0].numpy(), ref), float(np.abs(m[0].numpy().astype(np.float64) - ref).mean())))
            if all(d <= TOL_MASK and mean <= TOL_MASK_MEAN for d, mean in diffs):
                return max(d for d, _ in diffs), max(mean for _, mean in diffs), float(masks.view(-1)[index])
    return None


def attention_flip_explains(model, r, prediction: int):
    """FC-CLIP's layer i cross-attends only where prediction i's masks, resized to the
    layer's level, have sigmoid >= 0.5; one resized logit within rounding of 0 lands on
    the other side on another CPU's kernels (seen on AVX-512: R50 street, prediction 2),
    and self-attention spreads it to every query. This re-runs the layers with each such
    entry of the attention mask before `prediction` flipped, one at a time; if one run
    then matches the reference's mask logits and class logits (up to the near-tie queries
    test_class_logits accepts) at every later prediction, the mismatch is that flip.
    Returns (max mask diff, max mean mask diff, flipped logit) of that run, or None."""
    if prediction == 0:
        return None  # the learnt queries' prediction sees no attention mask
    decoder = model.transformer_decoder
    features, data = r["out"].features, r["data"]
    with torch.inference_mode():
        memory = decoder.memory([features[f"pixel_decoder_ms{level}"] for level in range(decoder.levels)])
        mask_features = features["pixel_decoder_mask_features"]
        output = decoder.query_feat.weight.unsqueeze(1).expand(-1, mask_features.shape[0], -1)
        _, _, attn_logits = decoder.predict(output, mask_features, memory.sizes[0])
        for i in range(prediction - 1):
            output = decoder.layer(i, output, decoder.attention_mask(attn_logits), memory)
            _, _, attn_logits = decoder.predict(output, mask_features, memory.sizes[(i + 1) % decoder.levels])
        near = torch.nonzero(attn_logits.abs().flatten() < FLIP_MARGIN).flatten()[:32]
        for index in near.tolist():
            flipped = attn_logits.clone()
            value = float(flipped.view(-1)[index])
            flipped.view(-1)[index] = FLIP_MARGIN if torch.sigmoid(torch.tensor(value)) < 0.5 else -FLIP_MARGIN
            state, diffs, matches = output, [], True
            for i in range(prediction - 1, len(decoder.transformer_ffn_layers)):
                state = decoder.layer(i, state, decoder.attention_mask(flipped), memory)
                embeddings, masks, flipped = decoder.predict(state, mask_features, memory.sizes[(i + 1) % decoder.levels])
                ref = data[f"layer{i + 1}_mask_logits"]
                diffs.append((max_diff(masks[0].numpy(), ref), float(np.abs(masks[0].numpy().astype(np.float64) - ref).mean())))
                logits = class_logits(embeddings, r["text_with_void"], model.class_logit_scale, r["class_index"], r["vocabulary"].num_classes)[0]
                logits, ref_logits = logits.numpy().astype(np.float64), data[f"layer{i + 1}_cls_logits"]
                off, near_tie = class_logit_mismatches(logits, ref_logits, masks[0])
                matches &= diffs[-1][0] <= TOL_MASK and diffs[-1][1] <= TOL_MASK_MEAN and len(off) <= 2 and near_tie == off
                matches &= float(np.abs(logits - ref_logits).mean()) <= 1e-4
                if not matches:
                    break
            if matches:
                return max(d for d, _ in diffs), max(mean for _, mean in diffs), value
    return None


def test_out_of_vocabulary_branch(run):
    """FC-CLIP's fixtures record CLIP's view of each final mask and its logits (EOV-Seg's
    only through sem_seg, checked below)."""
    model = run["model"]
    if run["family"] != "fc_clip":
        assert all("out_vocab_pooled" not in r["data"] for r in run["results"].values())
        return
    for name, r in run["results"].items():
        pooled = r["out"].clip_embeddings[0]
        diff = max_diff(pooled, r["data"]["out_vocab_pooled"])
        report(run["folder"], name, "out_vocab_pooled", diff, tolerance=TOL_CLS)
        assert diff <= TOL_CLS, f"{name}: out_vocab_pooled differs by {diff}"
        vocabulary = r["vocabulary"]
        _, class_index = TextEmbedder(model.text_encoder).classifier(vocabulary)
        with torch.inference_mode():
            text_with_void = model.text_with_void(torch.from_numpy(r["data"]["text_classifier"]))
        with torch.inference_mode():
            logits = class_logits(r["out"].clip_embeddings, text_with_void, model.clip_logit_scale, class_index, vocabulary.num_classes)[0]
        diff = max_diff(logits, r["data"]["out_vocab_cls_logits"])
        report(run["folder"], name, "out_vocab_cls_logits", diff, tolerance=TOL_CLS)
        assert diff <= TOL_CLS, f"{name}: out_vocab_cls_logits differ by {diff}"


def test_sem_seg(run):
    for name, r in run["results"].items():
        diff = max_diff(r["sem_seg"], r["data"]["sem_seg"])
        report(run["folder"], name, "sem_seg", diff, tolerance=TOL_SEM)
        assert diff <= TOL_SEM, f"{name}: sem_seg differs by {diff}"


def test_network_panoptic(run):
    for name, r in run["results"].items():
        np.testing.assert_array_equal(r["fused"].panoptic.numpy(), r["data"]["panoptic_seg"], err_msg=name)
        assert segments_info(r["fused"]) == r["case"]["segments_info"], name


def test_seen_unseen_decision_matches_official(run):
    """Our decision from the published COCO names gives the fixture's mask (the network
    itself is compared on the fixture's mask above)."""
    for name, r in run["results"].items():
        ours = [int(s) for s in r["vocabulary"].seen_in_training()]
        assert ours == r["data"]["category_overlapping_mask"].tolist(), name


def test_predictor_end_to_end(run, one_thread):
    """The user-facing predictor (no resize) gives the fixture's sem_seg and panoptic."""
    model = run["model"]
    predictor = Predictor(TorchEngine(model), TextEmbedder(model.text_encoder), InferenceConfig(min_size=0))
    for name, r in run["results"].items():
        predictor.set_vocabulary(r["case"]["classes"], r["case"]["things"])
        result = predictor(r["data"]["image"], return_probabilities=True)
        assert max_diff(result.probabilities, r["data"]["sem_seg"]) <= TOL_SEM, name
        np.testing.assert_array_equal(result.panoptic, r["data"]["panoptic_seg"], err_msg=name)


def test_postprocess_cases(run):
    """Every crafted post-processing case of the folder: identical ids, pixels and categories."""
    for case in (c for c in run["cases"] if c["kind"] == "postprocess"):
        check_postprocess_case(run["folder"], case)


def check_postprocess_case(folder, case) -> None:
    data = np.load(folder / f"{case['name']}.npz")
    thing = torch.zeros(case["num_classes"], dtype=torch.bool)
    thing[case["things"]] = True
    mask_cls, mask_pred = torch.from_numpy(data["mask_cls"]), torch.from_numpy(data["mask_pred"])
    fused = panoptic_fusion(mask_cls, mask_pred, thing, case["object_mask_threshold"], case["overlap_threshold"])
    np.testing.assert_array_equal(fused.panoptic.numpy(), data["panoptic_seg"], err_msg=case["name"])
    assert segments_info(fused) == case["segments_info"], case["name"]
    diff = max_diff(semantic_probabilities(mask_cls, mask_pred), data["sem_seg"])
    report(folder, case["name"], "sem_seg", diff, tolerance=1e-6)
    assert diff <= 1e-6, case["name"]


def segments_info(fused) -> list[dict]:
    return [
        {"id": i + 1, "isthing": bool(t), "category_id": int(k)}
        for i, (t, k) in enumerate(zip(fused.is_thing.tolist(), fused.category.tolist()))
    ]
