"""CLIP model config and pretrained weights agree: QuickGELU weights (OpenAI's and others) get a QuickGELU
config for every open_clip pretrained tag, and the clip_diff default (ViT-B-32 + openai) builds one."""

from __future__ import annotations

import pytest

open_clip = pytest.importorskip("open_clip")
torch = pytest.importorskip("torch")

from open_clip import pretrained as oc_pretrained  # noqa: E402
from open_clip.transformer import QuickGELU  # noqa: E402

from curate.filters.clip_diff import ClipDiff  # noqa: E402
from curate.models.clip import load_clip, resolve_model_name  # noqa: E402


def _weights_need_quick_gelu(model: str, tag: str) -> bool:
    """What the weights were trained with: the tag's declaration, else the config they were published for."""
    tag_cfg = oc_pretrained.get_pretrained_cfg(model, tag) or {}
    if "quick_gelu" in tag_cfg:
        return bool(tag_cfg["quick_gelu"])
    return bool((open_clip.get_model_config(model) or {}).get("quick_gelu", False))


def test_every_pretrained_tag_gets_a_config_with_its_activation():
    pairs = open_clip.list_pretrained()
    assert len(pairs) > 100
    needs = 0
    for model, tag in pairs:
        name, force = resolve_model_name(model, tag)
        built = force or bool((open_clip.get_model_config(name) or {}).get("quick_gelu", False))
        assert built == _weights_need_quick_gelu(model, tag), (model, tag, name, force)
        if name != model:  # a -quickgelu variant: the same weights are registered under it
            assert tag in open_clip.list_pretrained_tags_by_model(name), (model, tag, name)
        needs += _weights_need_quick_gelu(model, tag)
    assert needs >= 20  # OpenAI's nine, LAION-400M, MetaCLIP, DFN ...


def test_resolution_of_known_cases():
    assert resolve_model_name("ViT-B-32", "openai") == ("ViT-B-32-quickgelu", False)
    assert resolve_model_name("ViT-B-32", "laion2b_s34b_b79k") == ("ViT-B-32", False)  # trained with GELU
    assert resolve_model_name("ViT-B-32-quickgelu", "openai") == ("ViT-B-32-quickgelu", False)
    assert resolve_model_name("ViT-B-32", "/models/clip.bin") == ("ViT-B-32", False)  # a file: as named
    assert resolve_model_name("tiny", None) == ("tiny", False)


def test_default_clip_diff_builds_quickgelu():
    stage = ClipDiff()
    assert (stage.model, stage.pretrained) == ("ViT-B-32", "openai")
    # the reported mismatch: open_clip's plain config uses GELU, the openai weights need QuickGELU
    assert not open_clip.get_model_config("ViT-B-32").get("quick_gelu", False)
    assert oc_pretrained.get_pretrained_cfg("ViT-B-32", "openai")["quick_gelu"]
    enc = load_clip(stage.model, stage.pretrained, "cpu", torch.float32, random=True)  # offline: no weights
    acts = {type(m) for m in enc.model.modules()}
    assert QuickGELU in acts and torch.nn.GELU not in acts
