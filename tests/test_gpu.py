"""The torch CUDA path: fp16 autocast and CUDA graphs against fp32 on the parity
fixtures. Skipped, with the reason, on machines without a CUDA GPU (CI has none)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg_ros.backends import TorchEngine
from ovseg_ros.postprocess import panoptic_fusion
from ovseg_ros.preprocess import preprocess

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


@pytest.fixture(scope="module")
def cuda_model(parity_model):
    import copy

    return copy.deepcopy(parity_model).cuda()


def _inputs(model, folder, name):
    data = np.load(folder / f"{name}.npz")
    batch = preprocess([data["image"]], model.pixel_mean, model.pixel_std, min_size=0, device="cuda")
    return batch, torch.from_numpy(data["text_classifier"]).cuda(), data


@pytest.mark.parametrize("name", ["street", "indoor"])
def test_fp32_cuda_matches_fixture(cuda_model, parity_folder, name):
    batch, text, data = _inputs(cuda_model, parity_folder, name)
    out = TorchEngine(cuda_model, "cuda")(batch.images, text)
    diff = np.abs(out.mask_logits[0].cpu().numpy() - data["stage2_mask_logits"])
    assert diff.mean() <= 1e-3  # TF32 convolutions on Ampere+ round more than CPU fp32


@pytest.mark.parametrize("name", ["street", "indoor"])
def test_fp16_masks_agree_with_fp32(cuda_model, parity_folder, name):
    batch, text, _ = _inputs(cuda_model, parity_folder, name)
    fp32 = TorchEngine(cuda_model, "cuda")(batch.images, text).mask_logits[0] > 0
    fp16 = TorchEngine(cuda_model, "cuda", fp16=True)(batch.images, text).mask_logits[0] > 0
    inter = (fp32 & fp16).flatten(1).sum(1).float()
    union = (fp32 | fp16).flatten(1).sum(1).float()
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    assert iou.median() >= 0.95 and iou.min() >= 0.5, f"per-query mask IoU: median {iou.median():.3f}, min {iou.min():.3f}"


def test_cuda_graph_replay_equals_eager(cuda_model, parity_folder):
    batch, text, _ = _inputs(cuda_model, parity_folder, "street")
    eager = TorchEngine(cuda_model, "cuda")(batch.images, text)
    graphed = TorchEngine(cuda_model, "cuda", cuda_graphs=True)
    for rows in (text, text[:5]):  # a new vocabulary size re-captures, never rebuilds
        out = graphed(batch.images, rows)
    out = graphed(batch.images, text)
    torch.testing.assert_close(out.mask_logits, eager.mask_logits, rtol=0, atol=1e-4)


def test_fusion_on_gpu_equals_fixtures(parity_folder, parity_cases):
    for case in [c for c in parity_cases if c["kind"] == "postprocess"]:
        data = np.load(parity_folder / f"{case['name']}.npz")
        thing = torch.zeros(case["num_classes"], dtype=torch.bool)
        thing[case["things"]] = True
        fused = panoptic_fusion(torch.from_numpy(data["mask_cls"]).cuda(), torch.from_numpy(data["mask_pred"]).cuda(),
                                thing.cuda(), case["object_mask_threshold"], case["overlap_threshold"])
        np.testing.assert_array_equal(fused.panoptic.cpu().numpy(), data["panoptic_seg"])
