"""A fresh JointDiT's decomposed expert forward against the stock diffusers UNets on the same inputs.

JointDiT runs SVD's and AudioLDM2's blocks one by one (Input / Joint / Output blocks, skips carried across);
with its zero-initialised joint layers it must compute exactly what the stock models compute:
- video: `UNetSpatioTemporalConditionModel.forward`;
- audio: `AudioLDM2UNet2DConditionModel.forward` of the A-Expert (text cross-attention removed), and of the
  original UNet with the removed text transformers made the identity (their output projections zeroed),
  which also checks the weight re-indexing of `audio_unet_self_attention_only`.

Default suite: tiny random-init configs on CPU. `gpu` marker: the real SVD + AudioLDM2 weights on CUDA,
from JOINTDIT_VIDEO_MODEL / JOINTDIT_AUDIO_MODEL (local diffusers folders) or the hub cache (never
downloaded); skipped with the reason when they are absent.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch

from train.models.jointdit import JointDiT, audio_unet_self_attention_only


def neutralise_text_attention(unet):
    """A copy of a full AudioLDM2 UNet whose text-context transformers (GPT-2 / T5 slots) are the identity:
    a Transformer2DModel returns proj_out(...) + residual, so zero proj_out leaves its input unchanged."""
    unet = copy.deepcopy(unet)
    dims = unet.config.cross_attention_dim
    per_block = [list(d) for d in dims]
    n_ctx, j_self = len(per_block[0]), per_block[0].index(None)
    with torch.no_grad():
        for blk in list(unet.down_blocks) + [unet.mid_block] + list(unet.up_blocks):
            for i, attn in enumerate(getattr(blk, "attentions", []) or []):
                if i % n_ctx != j_self:
                    attn.proj_out.weight.zero_()
                    attn.proj_out.bias.zero_()
    return unet


def text_contexts(unet, sample, n_tokens=8):
    """Random GPT-2 / T5 context sequences of the widths the original UNet expects (its slots 1 and 2):
    whatever they hold, neutralised text transformers ignore them."""
    g = torch.Generator().manual_seed(5)
    dims = list(unet.config.cross_attention_dim[0])
    ctx = [torch.randn(sample.shape[0], n_tokens, d, generator=g).to(sample) for d in dims if d is not None]
    return dict(encoder_hidden_states=ctx[0], encoder_hidden_states_1=ctx[1])


def paper_like_inputs(model, b=1, frames=14, hw=(32, 32), t_audio=50, m_audio=16, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    vc, ac = model.video_unet.config, model.audio_unet.config
    clip_dim = model.audio_image_proj.in_features
    x = dict(
        video_sample=torch.randn(b, frames, vc.in_channels, *hw, generator=g),
        video_timestep=torch.full((b,), 0.25 * torch.log(torch.tensor(2.0)).item()),  # c_noise at sigma = 2
        audio_sample=torch.randn(b, ac.in_channels, t_audio, m_audio, generator=g),
        audio_timestep=torch.full((b,), 400),
        image_embeds=torch.randn(b, 1, clip_dim, generator=g),
        added_time_ids=torch.tensor([[6.0, 127.0, 0.02]] * b),
    )
    return {k: v.to(device) for k, v in x.items()}


@torch.no_grad()
def compare_with_stock(model: JointDiT, full_audio_unet, x) -> dict[str, float]:
    """Max |JointDiT - stock| / max |stock| for video, audio (A-Expert) and audio (original UNet)."""
    ov, oa = model(**x)
    rv = model.video_unet(x["video_sample"], x["video_timestep"], x["image_embeds"], x["added_time_ids"]).sample
    ra = model.audio_unet(x["audio_sample"], x["audio_timestep"], encoder_hidden_states=None).sample
    rf = neutralise_text_attention(full_audio_unet)(x["audio_sample"], x["audio_timestep"],
                                                    **text_contexts(full_audio_unet, x["audio_sample"])).sample
    rel = lambda a, b: float((a.float() - b.float()).abs().max() / b.float().abs().max())  # noqa: E731
    return {"video": rel(ov, rv), "audio": rel(oa, ra), "audio_original_unet": rel(oa, rf)}


def tiny_models(device):
    from train.experts import build_from_configs

    torch.manual_seed(0)
    m = build_from_configs("tiny")
    full = m["audioldm2_unet"].to(device).eval()
    model = JointDiT.from_experts(m["svd_unet"], audio_unet_self_attention_only(full), qk_dim=32, value_dim=48,
                                  heads=4, clip_dim=32).to(device).eval()
    return model, full


def test_tiny_decomposed_forward_equals_the_stock_unets():
    """16x16 latents: at 8x8 the tiny SVD's bottom is 1x1, where GroupNorm over 2 values amplifies float
    rounding to ~1e-4 (measured: 1.3e-4 at 8x8, 1.2e-6 at 16x16, 1.4e-6 at 32x32, relative)."""
    model, full = tiny_models("cpu")
    errs = compare_with_stock(model, full, paper_like_inputs(model, hw=(16, 16)))
    assert errs["video"] < 1e-5 and errs["audio"] < 1e-6 and errs["audio_original_unet"] < 1e-6, errs


def test_neutralised_text_attention_really_changes_the_original_unet():
    """Guard for the check above: the text transformers are not the identity before neutralising."""
    _, full = tiny_models("cpu")
    x = torch.randn(1, 8, 50, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = full(x, torch.tensor([400]), **text_contexts(full, x)).sample
        b = neutralise_text_attention(full)(x, torch.tensor([400]), **text_contexts(full, x)).sample
    assert (a - b).abs().max() > 1e-4


@pytest.mark.gpu
def test_tiny_decomposed_forward_equals_the_stock_unets_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model, full = tiny_models("cuda")
    errs = compare_with_stock(model, full, paper_like_inputs(model, hw=(16, 16), device="cuda"))
    assert max(errs.values()) < 1e-4, errs


def real_model_paths() -> tuple[str, str] | str:
    """(video folder, audio folder) of the real models, or the reason they are not available."""
    out = []
    for env, repo in (("JOINTDIT_VIDEO_MODEL", "stabilityai/stable-video-diffusion-img2vid"),
                      ("JOINTDIT_AUDIO_MODEL", "cvssp/audioldm2")):
        path = os.environ.get(env)
        if not path:
            try:
                from huggingface_hub import snapshot_download

                path = snapshot_download(repo, local_files_only=True, allow_patterns=["unet/*"])
            except Exception:  # noqa: BLE001 - not in the cache
                return f"{repo} weights not found: set {env} to a local diffusers folder (no download is attempted)"
        if not (Path(path) / "unet" / "config.json").is_file():
            return f"{env}={path} has no unet/config.json"
        out.append(path)
    return tuple(out)


@pytest.mark.gpu
def test_real_experts_decomposed_forward_equals_the_stock_unets():
    from diffusers import UNetSpatioTemporalConditionModel
    from diffusers.pipelines.audioldm2.modeling_audioldm2 import AudioLDM2UNet2DConditionModel

    from train.experts import JOINT_PRESETS

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    paths = real_model_paths()
    if isinstance(paths, str):
        pytest.skip(paths)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    vunet = UNetSpatioTemporalConditionModel.from_pretrained(paths[0], subfolder="unet")
    full = AudioLDM2UNet2DConditionModel.from_pretrained(paths[1], subfolder="unet").cuda().eval()
    model = JointDiT.from_experts(vunet, audio_unet_self_attention_only(full), clip_dim=1024,
                                  num_frames=vunet.config.num_frames, **JOINT_PRESETS["paper"]).cuda().eval()
    # paper shapes: 256x256 video -> 14 x 32 x 32 latents, 2 s audio -> 50 x 16 latents
    x = paper_like_inputs(model, device="cuda")
    assert model.joint_token_counts((14, 32, 32), (50, 16))[0] == (896, 52)
    errs = compare_with_stock(model, full, x)
    assert max(errs.values()) < 1e-3, errs
