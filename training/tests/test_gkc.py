"""GKC's terms, each against a second, element-by-element computation of what the paper
describes (ovseg_training/gkc.py says which reading of it this is)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from ovseg_training.config import GKCConfig, LossConfig, TrainConfig
from ovseg_training.gkc import clip_region_targets, distillation_loss, diversified_class_logits, relation_loss
from ovseg_training.losses import SetCriterion

from ovseg_ros.config import variant_config
from ovseg_ros.modeling import EOVSeg


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_each_query_sees_one_drawn_synonym_per_class():
    counts = torch.tensor([3, 1, 2])  # rows 0-2: class 0, row 3: class 1, rows 4-5: class 2
    text = unit(7, 8)  # six synonym rows and void
    embeddings = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))
    draws = torch.rand(2, 5, 3, generator=torch.Generator().manual_seed(2))
    draws[0, 0] = torch.tensor([0.0, 0.999, 0.5])  # edges: first row, the last of one, the second of two
    scale = torch.tensor(math.log(20.0))
    got = diversified_class_logits(embeddings, text, scale, counts, draws)
    assert got.shape == (2, 5, 4)
    first_row = [0, 3, 4]
    for b in range(2):
        for q in range(5):
            e = F.normalize(embeddings[b, q], dim=0)
            for c in range(3):
                row = first_row[c] + int(draws[b, q, c] * counts[c])
                assert got[b, q, c] == pytest.approx(20.0 * float(e @ text[row]), abs=1e-5)
            assert got[b, q, 3] == pytest.approx(20.0 * float(e @ text[6]), abs=1e-5)
    assert got[0, 0, 0] == pytest.approx(20.0 * float(F.normalize(embeddings[0, 0], dim=0) @ text[0]), abs=1e-5)
    assert got[0, 0, 2] == pytest.approx(20.0 * float(F.normalize(embeddings[0, 0], dim=0) @ text[5]), abs=1e-5)


def test_draws_name_every_synonym_about_equally_often():
    counts = torch.tensor([3, 2])
    text = torch.eye(6)[:6]  # row r's logit is the embedding's r-th coordinate
    embeddings = torch.arange(6.0).expand(400, 1, 6) + 1.0  # a fixed direction; picks read back from values
    draws = torch.rand(400, 1, 2, generator=torch.Generator().manual_seed(0))
    got = diversified_class_logits(embeddings, text, torch.tensor(0.0), counts, draws)
    values = F.normalize(torch.arange(6.0) + 1.0, dim=0)
    rows = (got[:, 0, :2, None] - values).abs().argmin(-1)  # which row each query was given
    assert set(rows[:, 0].tolist()) == {0, 1, 2} and set(rows[:, 1].tolist()) == {3, 4}
    assert min(torch.bincount(rows[:, 0])[0:3].tolist()) > 100 and min(torch.bincount(rows[:, 1])[3:5].tolist()) > 160


def test_distillation_is_the_text_weighted_l1_distance_of_normalised_embeddings():
    student = torch.randn(4, 6, generator=torch.Generator().manual_seed(3)) * 3
    teacher = unit(4, 6, seed=4)
    weights = torch.tensor([0.9, 0.1, 0.0, 0.5])
    expected = 0.0
    for i in range(4):
        norm = math.sqrt(sum(float(v) ** 2 for v in student[i]))
        expected += float(weights[i]) * sum(abs(float(student[i, d]) / norm - float(teacher[i, d])) for d in range(6))
    assert float(distillation_loss(student, teacher, weights, num_masks=2.0)) == pytest.approx(expected / 2.0, rel=1e-5)
    assert float(distillation_loss(teacher * 5, teacher, torch.ones(4), 1.0)) == pytest.approx(0.0, abs=1e-5)


def test_relation_term_compares_every_pair_of_an_images_segments():
    student, teacher = torch.randn(5, 6, generator=torch.Generator().manual_seed(5)), unit(5, 6, seed=6)
    s = F.normalize(student, dim=-1)
    pairs = [(i, j) for i in range(5) for j in range(5) if i != j]
    expected = sum(abs(float(s[i] @ s[j]) - float(teacher[i] @ teacher[j])) for i, j in pairs) / len(pairs)
    assert float(relation_loss(student, teacher)) == pytest.approx(expected, rel=1e-5)
    assert float(relation_loss(student[:1], teacher[:1])) == 0.0
    rotation = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(7)))[0]
    assert float(relation_loss(teacher @ rotation, teacher)) == pytest.approx(0.0, abs=1e-5)  # relations, not positions


@pytest.fixture(scope="module")
def toy_model():
    torch.manual_seed(0)
    return EOVSeg(variant_config("toy")).eval()


def test_region_targets_are_clips_view_of_each_segment_weighted_by_its_class_probability(toy_model):
    model = toy_model
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(8))
    res5 = model.image_encoder(images)[-1]  # [1, C, 2, 2]
    masks = torch.zeros(3, 64, 64, dtype=torch.bool)
    masks[0, :32, :] = True  # the top two cells
    masks[1, 40:44, 40:44] = True  # 16 pixels: a sixteenth of one cell, kept
    labels = torch.tensor([2, 0, 1])  # masks[2] empty: a region the crop removed
    text = unit(5, model.void_embedding.shape[1], seed=9)  # 4 rows + void
    class_index = torch.tensor([0, 0, 1, 2])
    (region, weights), = clip_region_targets(model.image_encoder, res5, [masks], [labels], text, model.clip_logit_scale,
                                             class_index, 3)
    inside = torch.zeros(3, 2, 2)
    inside[0, 0, :] = 1.0
    inside[1, 1, 1] = 1.0
    expected = F.normalize(model.image_encoder.embed_masks(res5, inside[None] - 0.5)[0], dim=-1)
    torch.testing.assert_close(region[:2], expected[:2], atol=1e-5, rtol=1e-5)
    scale = float(model.clip_logit_scale.detach().exp())
    for i in range(2):
        per_class = [max(scale * float(region[i] @ text[r]) for r in range(4) if class_index[r] == c) for c in range(3)]
        log_probability = per_class[labels[i]] - math.log(sum(math.exp(v) for v in per_class))
        assert math.log(float(weights[i])) == pytest.approx(log_probability, abs=2e-3)  # float32 logits at scale 100
    assert float(weights[2]) == 0.0


def test_criterion_distils_the_matched_query_toward_its_own_segment():
    """Two segments, three queries: the matching pairs query 2 with segment 0 and query 0
    with segment 1; the terms use those pairs and nothing else."""
    criterion = SetCriterion(2, LossConfig(num_points=64), GKCConfig(distill_weight=1.0, relation_weight=1.0))
    masks = torch.zeros(1, 2, 16, 16)
    masks[0, 0, :8] = 1.0
    masks[0, 1, 8:] = 1.0
    mask_logits = torch.full((1, 3, 16, 16), -20.0)
    mask_logits[0, 2, :8] = 20.0
    mask_logits[0, 0, 8:] = 20.0
    class_logits = torch.full((1, 3, 3), -10.0)
    class_logits[0, 2, 0] = class_logits[0, 0, 1] = 10.0
    embeddings = torch.randn(1, 3, 6, generator=torch.Generator().manual_seed(10))
    teacher, weights = unit(2, 6, seed=11), torch.tensor([0.7, 0.4])
    losses = criterion.stage_losses(class_logits, mask_logits, [torch.tensor([0, 1])], [masks[0]], 2.0, embeddings,
                                    [(teacher, weights)])
    student = embeddings[0, [2, 0]]
    assert float(losses["loss_distill"]) == pytest.approx(float(distillation_loss(student, teacher, weights, 2.0)), rel=1e-6)
    assert float(losses["loss_relation"]) == pytest.approx(float(relation_loss(student, teacher)), rel=1e-6)
    plain = SetCriterion(2, LossConfig(num_points=64)).stage_losses(class_logits, mask_logits, [torch.tensor([0, 1])], [masks[0]], 2.0)
    assert set(plain) == {"loss_ce", "loss_mask", "loss_dice"}


def test_the_gkc_config_turns_both_options_on():
    config = TrainConfig.from_file("training/configs/coco_r50_gkc.json")
    assert config.gkc.text_diversification and config.gkc.distill_weight > 0 and config.gkc.relation_weight > 0
    published = TrainConfig.from_file("training/configs/coco_r50.json")
    assert published.gkc == GKCConfig()  # off: the published recipe
    assert {k: v for k, v in config.to_dict().items() if k not in ("gkc", "output_dir")} == \
        {k: v for k, v in published.to_dict().items() if k not in ("gkc", "output_dir")}
    with pytest.raises(ValueError, match="gkc.distil"):
        TrainConfig.from_dict({"gkc": {"distil_weight": 1.0}})
