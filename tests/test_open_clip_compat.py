"""Our CLIP towers against open_clip's own models (random weights, no download):
load_clip_towers takes open_clip state dicts, and the towers then compute what
open_clip computes (batch-first transformers, QuickGELU)."""

from __future__ import annotations

import open_clip
import pytest
import torch

from ovseg_ros.checkpoint import load_clip_towers
from ovseg_ros.config import variant_config
from ovseg_ros.modeling import EOVSeg


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    torch.manual_seed(0)
    resnet = open_clip.create_model("RN50-quickgelu", pretrained=None).eval()
    vit = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).eval()
    folder = tmp_path_factory.mktemp("clip")
    torch.save(resnet.state_dict(), folder / "rn50.pt")
    torch.save(vit.state_dict(), folder / "vitb16.pt")
    model = EOVSeg(variant_config("S")).eval()
    load_clip_towers(model, folder / "rn50.pt", folder / "vitb16.pt")
    return resnet, vit, model


def test_text_tower_matches_open_clip(towers):
    resnet, _, model = towers
    tokens = open_clip.get_tokenizer("RN50-quickgelu")(["a photo of a forklift.", "There is a large pallet in the scene."])
    with torch.no_grad():
        theirs = resnet.encode_text(tokens)
        ours = model.text_encoder(tokens)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_image_tower_and_attention_pool_match_open_clip(towers):
    resnet, _, model = towers
    image = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        theirs = resnet.visual(image)  # CLIP's global attention pooling
        res5 = model.image_encoder(image)[-1]
        everywhere = torch.ones(1, 1, *res5.shape[-2:])  # a mask over the whole map
        ours = model.image_encoder.attnpool(res5, everywhere)[:, 0]
    # CLIP pools with a query over the mean token *and* attends to it; the masked pool
    # attends only to the spatial tokens, so it differs by that one token's share.
    cos = torch.nn.functional.cosine_similarity(ours, theirs)
    assert cos.item() > 0.9


def test_vit_stem_matches_open_clip_first_block(towers):
    _, vit, model = towers
    image = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        visual = vit.visual
        x = visual.conv1(image).flatten(2).transpose(1, 2)
        x = torch.cat([visual.class_embedding.expand(1, 1, -1), x], dim=1) + visual.positional_embedding
        x = visual.transformer.resblocks[0](visual.ln_pre(x))[:, 1:]
        theirs = x.transpose(1, 2).reshape(1, 768, 14, 14)
        ours = model.vit_stem(image)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_convnext_large_variant_matches_open_clip(tmp_path):
    """EOV-Seg L: no fixtures exist, so its CLIP towers are checked against open_clip's
    convnext_large_d_320 (random weights): same keys, same text features, and a mask
    covering the whole image gives CLIP's own image embedding."""
    torch.manual_seed(0)
    convnext = open_clip.create_model("convnext_large_d_320", pretrained=None).eval()
    vit = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).eval()
    torch.save(convnext.state_dict(), tmp_path / "convnext.pt")
    torch.save(vit.state_dict(), tmp_path / "vit.pt")
    del vit
    model = EOVSeg(variant_config("L")).eval()
    load_clip_towers(model, tmp_path / "convnext.pt", tmp_path / "vit.pt")
    assert model.image_encoder.channels == [192, 384, 768, 1536]

    tokens = open_clip.get_tokenizer("convnext_large_d_320")(["a photo of a forklift."])
    image = torch.randn(1, 3, 320, 320)
    with torch.no_grad():
        torch.testing.assert_close(model.text_encoder(tokens), convnext.encode_text(tokens), rtol=1e-4, atol=1e-4)
        res5 = model.image_encoder(image)[-1]
        whole = model.image_encoder.embed_masks(res5, torch.ones(1, 1, *res5.shape[-2:]))[:, 0]
        torch.testing.assert_close(whole, convnext.encode_image(image), rtol=1e-4, atol=1e-4)
        out = model(torch.randn(1, 3, 64, 64), torch.nn.functional.normalize(torch.randn(3, 768), dim=-1))
    assert out.clip_embeddings.shape == (1, 100, 768) and out.mask_logits[-1].shape == (1, 100, 16, 16)
