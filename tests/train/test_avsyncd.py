"""AVSyncD: the UNet's added layers, the authors' checkpoint layout, the objective and sampler, the tiny run.

Fixtures build tiny random-init parts (SD layout) and reuse the session's synthetic shards (`shard_dir`).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel

from pathlib import Path

from train.models.avsyncd import (PRESETS, AVSyncDUNet, FirstFrameConv2d, build_unet, load_asva_unet,
                                  segment_audio_tokens, unet_from_sd)

TOL = 1e-5
TINY_CONFIG = str(Path(__file__).resolve().parents[2] / "train" / "configs" / "avsyncd_tiny.yaml")


def sd_kwargs(preset: str) -> dict:
    return {k: v for k, v in PRESETS[preset].items() if k != "audio_cross_attention_dim"}


def randomize_trainable(unet: AVSyncDUNet, std: float = 0.05, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in unet.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)


@pytest.fixture(scope="module")
def tiny_components(tmp_path_factory):
    from train.avsyncd_components import write_tiny_components

    return write_tiny_components(tmp_path_factory.mktemp("avsyncd_parts"), seed=0)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_components, shard_dir):
    """The tiny preset trained on the 4 test clips (the overfit run every later test reuses)."""
    from train.avsyncd import parse_args, train

    out = tmp_path_factory.mktemp("avsyncd_run")
    cfg, _ = parse_args(["--config", TINY_CONFIG, "--shards", str(shard_dir / "train-*.tar"),
                         "--out-dir", str(out), "--steps", "40", f"sd={tiny_components}",
                         f"imagebind={tiny_components / 'audio_encoder'}", "progress=false", "save_every=20"])
    return cfg, train(cfg)


# ------------------------------------------------------------------------------------- audio tokens


def asva_segment_mask(n_segment: int, nf: int = 12, nt: int = 19) -> torch.Tensor:
    """The authors' rule, written out: windows of ceil(nt / n) time columns at rounded linspace starts, over
    every frequency row, plus the CLS token -> bool [n_segment, 1 + nf * nt]."""
    size = math.ceil(nt / n_segment)
    starts = np.round(np.linspace(0, nt - size, n_segment)).astype(int)
    m = torch.zeros(n_segment, nf, nt, dtype=torch.bool)
    for s, a in enumerate(starts):
        m[s, :, a : a + size] = True
    return torch.cat([torch.ones(n_segment, 1, dtype=torch.bool), m.reshape(n_segment, -1)], 1)


def test_audio_segments_are_the_authors_masked_tokens():
    tokens = torch.randn(2, 1 + 12 * 19, 8)
    seg = segment_audio_tokens(tokens, 12)
    assert seg.shape == (2, 12, 1 + 12 * 2, 8)
    mask = asva_segment_mask(12)
    for f in range(12):
        assert torch.equal(seg[:, f], tokens[:, mask[f]])  # same tokens, same order (global first)
    assert torch.equal(seg[:, :, 0], tokens[:, None, 0].expand(-1, 12, -1))


def test_imagebind_audio_tokens_shapes_and_checkpoint_keys():
    from curate.models.imagebind import audio_token_encoder, import_imagebind

    enc = audio_token_encoder("tiny", random=True)
    tok, emb = enc(torch.randn(2, 1, 128, 204))
    assert tok.shape == (2, 1 + 12 * 19, 32) and emb.shape == (2, 32)
    # the authors' audio encoder names its parts preprocessor / trunk / head / postprocessor / final_layer_norm
    assert {k.split(".")[0] for k in enc.state_dict()} == {"preprocessor", "trunk", "head", "postprocessor",
                                                            "final_layer_norm"}
    # ImageBind's own checkpoint layout (modality_*.audio.*) loads into it, every key used
    imagebind_model, _, _ = import_imagebind()
    from curate.models.imagebind import PRESETS as IB

    torch.manual_seed(1)
    full = imagebind_model.ImageBindModel(**IB["tiny"])
    enc.load_imagebind_state(full.state_dict())
    assert torch.equal(enc.trunk.state_dict()["blocks.0.attn.in_proj_weight"],
                       full.modality_trunks["audio"].state_dict()["blocks.0.attn.in_proj_weight"])
    with pytest.raises(ValueError, match="does not fit"):
        enc.load_imagebind_state({"modality_trunks.audio.bogus": torch.zeros(1)})


def test_imagebind_checkpoint_missing_fails_at_once(tmp_path):
    from curate.models.imagebind import audio_token_encoder

    with pytest.raises(FileNotFoundError, match="not found"):
        audio_token_encoder("tiny", checkpoint=str(tmp_path / "imagebind_huge.pth"))


# ------------------------------------------------------------------------------------- added layers


def test_first_frame_conv_is_kernel_3_over_first_prev_current():
    from train.models.avsyncd import VideoContext

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, 3, padding=1)
    video = VideoContext()
    ff = FirstFrameConv2d(conv, video)
    assert ff.weight is conv.weight and torch.count_nonzero(ff.conv_temp.weight) == 0
    with torch.no_grad():
        ff.conv_temp.weight.normal_()
        ff.conv_temp.bias.normal_()
    b, f = 2, 4
    x = torch.randn(b * f, 3, 6, 6)
    video.num_frames = f
    out = ff(x).view(b, f, 5, 6, 6)
    y = conv(x).view(b, f, 5, 6, 6)
    W, bias = ff.conv_temp.weight, ff.conv_temp.bias
    for t in range(f):
        z = torch.cat([y[:, 0], y[:, max(t - 1, 0)], y[:, t]], 1)  # [b, 15, h, w]
        want = y[:, t] + torch.einsum("oc,bchw->bohw", W, z) + bias[None, :, None, None]
        torch.testing.assert_close(out[:, t], want, atol=TOL, rtol=TOL)


def test_first_frame_attention_takes_keys_and_values_from_frame_one():
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    from train.models.avsyncd import FirstFrameAttnProcessor, VideoContext

    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8)
    video = VideoContext()
    b, f, n = 2, 3, 5
    h = torch.randn(b * f, n, 16)
    plain = attn(h).view(b, f, n, 16)  # ordinary self-attention (diffusers' default processor)
    attn.set_processor(FirstFrameAttnProcessor(video))
    video.num_frames = f
    ff = attn(h).view(b, f, n, 16)
    torch.testing.assert_close(ff[:, 0], plain[:, 0], atol=TOL, rtol=TOL)
    hv = h.view(b, f, n, 16)
    attn.set_processor(AttnProcessor2_0())
    for t in range(f):  # frame t = cross-attention from frame t to frame 1
        torch.testing.assert_close(ff[:, t], attn(hv[:, t], encoder_hidden_states=hv[:, 0]), atol=TOL, rtol=TOL)


def test_fresh_model_is_sd_with_first_frame_attention():
    """At init every added layer is an identity: frame 1 gets exactly the frozen SD UNet's output, and a video
    of identical frames gets SD's output on every frame (first-frame attention = self-attention then)."""
    torch.manual_seed(0)
    sd = UNet2DConditionModel(**sd_kwargs("tiny")).eval()
    model = build_unet("tiny").eval()
    model.load_state_dict(sd.state_dict(), strict=False)
    x = torch.randn(2, 4, 4, 8, 8)
    text, audio = torch.randn(2, 7, 32), torch.randn(2, 4, 25, 32)
    with torch.no_grad():
        y = model(x, 500, text, audio).sample
        torch.testing.assert_close(y[:, 0], sd(x[:, 0], 500, text).sample, atol=TOL, rtol=TOL)
        same = x[:, :1].expand_as(x)
        y_same = model(same, 500, text, audio).sample
        want = sd(x[:, 0], 500, text).sample[:, None].expand_as(y_same)
        torch.testing.assert_close(y_same, want, atol=TOL, rtol=TOL)
        # ... and the audio cannot matter yet
        torch.testing.assert_close(model(x, 500, text, torch.randn_like(audio)).sample, y, atol=TOL, rtol=TOL)
    # once trained (here: perturbed), audio and the other frames do change the output
    randomize_trainable(model)
    with torch.no_grad():
        y2 = model(x, 500, text, audio).sample
        assert (model(x, 500, text, torch.randn_like(audio)).sample - y2).abs().max() > 1e-3


def test_trainable_layers_and_gradient_flow():
    torch.manual_seed(0)
    model = build_unet("tiny")
    model.set_trainable()
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {n for n, _ in model.trainable_parameters()}
    for family in ("conv_temp", "attn_audio", "norm_audio", "attn_temp", "norm_temp", "pos_embedding_temp"):
        assert any(f".{family}." in n for n in names), family
    assert not any(".attn1." in n or ".attn2." in n or ".ff." in n for n in names)  # SD's attention stays frozen
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert frozen == sum(p.numel() for p in UNet2DConditionModel(**sd_kwargs("tiny")).parameters())
    # temporal convs on conv_in, conv_out, every ResNet conv (incl. shortcuts) and resampler conv
    ff = {n for n, m in model.named_modules() if isinstance(m, FirstFrameConv2d)}
    assert {"conv_in", "conv_out", "down_blocks.0.resnets.0.conv1", "down_blocks.1.resnets.0.conv_shortcut",
            "down_blocks.0.downsamplers.0.conv", "up_blocks.0.upsamplers.0.conv", "mid_block.resnets.1.conv2"} <= ff
    assert not any("proj_in" in n or "proj_out" in n for n in ff)
    randomize_trainable(model)
    loss = model(torch.randn(1, 3, 4, 8, 8), 10, torch.randn(1, 7, 32), torch.randn(1, 3, 25, 32)).sample.square().mean()
    loss.backward()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None, n


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = build_unet("tiny")
    randomize_trainable(model)
    model.set_trainable()
    model.train()
    x, t, au = torch.randn(2, 3, 4, 8, 8), torch.randn(2, 7, 32), torch.randn(2, 3, 25, 32)

    def grads():
        model.zero_grad(set_to_none=True)
        model(x, 7, t, au).sample.square().mean().backward()
        return {n: p.grad.clone() for n, p in model.trainable_parameters()}

    plain = grads()
    model.enable_gradient_checkpointing()
    ckpt = grads()
    for n in plain:
        torch.testing.assert_close(ckpt[n], plain[n], atol=1e-6, rtol=1e-4)


def test_save_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_unet("tiny").eval()
    randomize_trainable(model)
    model.save_pretrained(tmp_path / "unet")
    back = AVSyncDUNet.from_pretrained(tmp_path / "unet").eval()
    a, b = model.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert isinstance(back.conv_in, FirstFrameConv2d)
    x, t, au = torch.randn(1, 3, 4, 8, 8), torch.randn(1, 7, 32), torch.randn(1, 3, 25, 32)
    with torch.no_grad():
        torch.testing.assert_close(back(x, 3, t, au).sample, model(x, 3, t, au).sample, atol=TOL, rtol=TOL)


# ------------------------------------------------------------------------------------- authors' checkpoints


def asva_unet_shapes(preset: str, device=None) -> dict[str, tuple]:
    """The authors' AudioUNet3DConditionModel state dict, by their naming rules: SD's 2-D UNet names (their 3-D
    blocks keep diffusers' child names) + `conv_temp` Linear(3C, C) inside every FFInflatedConv3d (conv_in,
    conv_out, ResNet conv1/conv2/conv_shortcut, down/up-sampler conv) + per transformer block `norm_audio`,
    `attn_audio` (k/v from the audio dim), `pos_embedding_temp.linear_1/2`, `attn_temp`, `norm_temp`."""
    kw = sd_kwargs(preset)
    audio_dim = PRESETS[preset]["audio_cross_attention_dim"]
    if device:
        with torch.device(device):
            sd = UNet2DConditionModel(**kw)
    else:
        sd = UNet2DConditionModel(**kw)
    shapes = {k: tuple(v.shape) for k, v in sd.state_dict().items()}
    out = dict(shapes)
    for k, s in shapes.items():
        if not k.endswith(".weight") or len(s) != 4:
            continue
        conv = k[: -len(".weight")]
        last = conv.rsplit(".", 1)[-1]
        ff = conv in ("conv_in", "conv_out") or (".resnets." in conv and last in ("conv1", "conv2", "conv_shortcut")) \
            or ((".downsamplers." in conv or ".upsamplers." in conv) and last == "conv")
        if ff:
            c = s[0]
            out[f"{conv}.conv_temp.weight"], out[f"{conv}.conv_temp.bias"] = (c, 3 * c), (c,)
    for k, s in shapes.items():
        if k.endswith("transformer_blocks.0.attn1.to_q.weight"):
            p, d = k[: -len("attn1.to_q.weight")], s[0]
            out.update({p + "norm_audio.weight": (d,), p + "norm_audio.bias": (d,),
                        p + "attn_audio.to_q.weight": (d, d), p + "attn_audio.to_k.weight": (d, audio_dim),
                        p + "attn_audio.to_v.weight": (d, audio_dim), p + "attn_audio.to_out.0.weight": (d, d),
                        p + "attn_audio.to_out.0.bias": (d,),
                        p + "pos_embedding_temp.linear_1.weight": (d, d), p + "pos_embedding_temp.linear_1.bias": (d,),
                        p + "pos_embedding_temp.linear_2.weight": (d, d), p + "pos_embedding_temp.linear_2.bias": (d,),
                        p + "attn_temp.to_q.weight": (d, d), p + "attn_temp.to_k.weight": (d, d),
                        p + "attn_temp.to_v.weight": (d, d), p + "attn_temp.to_out.0.weight": (d, d),
                        p + "attn_temp.to_out.0.bias": (d,), p + "norm_temp.weight": (d,), p + "norm_temp.bias": (d,)})
    return out


def asva_unet_config(preset: str) -> dict:
    """Their modules/unet/config.json, with their block class names."""
    names = {"CrossAttnDownBlock2D": "FFSpatioAudioTempCrossAttnDownBlock3D", "DownBlock2D": "FFSpatioTempResDownBlock3D",
             "UpBlock2D": "FFSpatioTempResUpBlock3D", "CrossAttnUpBlock2D": "FFSpatioAudioTempCrossAttnUpBlock3D"}
    kw = dict(PRESETS[preset])
    return {"_class_name": "AudioUNet3DConditionModel", "_diffusers_version": "0.29.2",
            **{k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()},
            "down_block_types": [names[t] for t in kw["down_block_types"]],
            "up_block_types": [names[t] for t in kw["up_block_types"]],
            "mid_block_type": "FFSpatioAudioTempCrossAttnUNetMidBlock3D", "flip_sin_to_cos": True, "freq_shift": 0}


def test_paper_unet_has_the_authors_keys_and_the_papers_counts():
    from train.avsyncd_components import param_table

    model = build_unet("paper", device="meta")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == asva_unet_shapes("paper", device="meta")
    rows = param_table("paper")
    # supplement Tab. 2 (millions): FF temporal conv 191, temporal attention 75, audio cross attention 44
    assert rows["conv_temp"] / 1e6 == pytest.approx(191, abs=1)
    assert (rows["attn_temp"] + rows["pos_embedding_temp"] + rows["norm_temp"]) / 1e6 == pytest.approx(75, abs=1)
    assert (rows["attn_audio"] + rows["norm_audio"]) / 1e6 == pytest.approx(44, abs=1)
    assert rows["frozen_sd"] == 859_520_964  # SD 1.5's UNet (the paper rounds it to 870 M)


def test_authors_checkpoint_layout_loads(tmp_path):
    """A released checkpoint: ckpts/checkpoint-N/modules/{unet,audio_encoder}, full state dicts (frozen parts
    included), safetensors with their key names."""
    from safetensors.torch import save_file

    from curate.models.imagebind import audio_token_encoder
    from train.avsyncd_components import load_audio_encoder

    g = torch.Generator().manual_seed(3)
    state = {k: torch.randn(s, generator=g) for k, s in asva_unet_shapes("tiny").items()}
    mod = tmp_path / "avsync15_audio-cond_cfg" / "ckpts" / "checkpoint-37000" / "modules"
    (mod / "unet").mkdir(parents=True)
    (mod / "unet" / "config.json").write_text(json.dumps(asva_unet_config("tiny")))
    save_file(state, str(mod / "unet" / "diffusion_pytorch_model.safetensors"))
    for where in (mod, mod / "unet", tmp_path / "avsync15_audio-cond_cfg"):
        unet = load_asva_unet(where)
        got = unet.state_dict()
        assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)
    # their frozen ImageBind audio encoder, saved beside it
    enc = audio_token_encoder("tiny", random=True)
    ae = {k: torch.randn(v.shape, generator=g) for k, v in enc.state_dict().items()}
    (mod / "audio_encoder").mkdir()
    (mod / "audio_encoder" / "config.json").write_text(json.dumps(
        {"_class_name": "ImageBindSegmaskAudioEncoder", "n_segment": 12, "pretrained_model_name": "imagebind-huge"}))
    save_file(ae, str(mod / "audio_encoder" / "diffusion_pytorch_model.safetensors"))
    back = load_audio_encoder(str(mod / "audio_encoder"), preset="tiny")
    assert all(torch.equal(back.state_dict()[k], ae[k]) for k in ae)
    # a key of another name or shape is refused, naming it
    bad = dict(state)
    bad["conv_in.conv_temp.weight"] = torch.zeros(1, 1)
    save_file(bad, str(mod / "unet" / "diffusion_pytorch_model.safetensors"))
    with pytest.raises((ValueError, RuntimeError)):
        load_asva_unet(mod)


def test_unet_from_sd_layout(tiny_components, tmp_path):
    unet = unet_from_sd(str(tiny_components), audio_cross_attention_dim=32)
    sd = UNet2DConditionModel.from_pretrained(str(tiny_components), subfolder="unet")
    ours = unet.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in sd.state_dict().items())
    assert all(torch.count_nonzero(p) == 0 for n, p in unet.named_parameters() if "conv_temp" in n)
    from train.avsyncd_components import load_components

    with pytest.raises(FileNotFoundError, match="diffusers layout"):
        load_components(str(tmp_path / "no_sd_here"), str(tiny_components / "audio_encoder"))


# ------------------------------------------------------------------------------------- objective and sampler


class Recorder(torch.nn.Module):
    """A stand-in denoiser: records its inputs; eps = a function of (x, audio) so CFG can be checked."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, t, text, audio):
        self.calls.append((x.clone(), torch.as_tensor(t).clone(), text.clone(), audio.clone()))
        return type("O", (), {"sample": x * 0.5 + audio.mean(dim=(2, 3))[:, :, None, None, None]})()


def test_training_loss_conditions_on_clean_first_frame_and_drops_audio():
    from train.avsyncd_diffusion import DiffusionConfig, train_scheduler, training_loss

    sched = train_scheduler(DiffusionConfig())
    lat = torch.randn(3, 12, 4, 4, 4)
    audio, null = torch.randn(3, 12, 5, 8), torch.zeros(1, 12, 5, 8)
    rec = Recorder()
    out = training_loss(rec, lat, torch.randn(3, 7, 8), audio, null, sched, null_prob=0.0,
                        generator=torch.Generator().manual_seed(0))
    x, t, _, a = rec.calls[0]
    assert torch.equal(x[:, 0], lat[:, 0]) and not torch.allclose(x[:, 1:], lat[:, 1:])
    assert torch.equal(a, audio)
    # the loss ignores frame 1: changing what the model predicts there changes nothing
    g = torch.Generator().manual_seed(0)
    l1 = training_loss(rec, lat, torch.randn(3, 7, 8), audio, null, sched, 0.0, generator=g)["loss"]

    class FirstFrameJunk(Recorder):
        def forward(self, x, t, text, audio):
            out = super().forward(x, t, text, audio).sample.clone()
            out[:, 0] = 1e6
            return type("O", (), {"sample": out})()

    g = torch.Generator().manual_seed(0)
    l2 = training_loss(FirstFrameJunk(), lat, torch.randn(3, 7, 8), audio, null, sched, 0.0, generator=g)["loss"]
    torch.testing.assert_close(l1, l2)
    rec2 = Recorder()
    out = training_loss(rec2, lat, torch.randn(3, 7, 8), audio, null, sched, null_prob=1.0)
    assert out["null"].all() and torch.equal(rec2.calls[0][3], null.expand_as(audio))
    # 20 %: the drop rate over many draws
    g = torch.Generator().manual_seed(1)
    drops = torch.cat([training_loss(Recorder(), lat, torch.randn(3, 7, 8), audio, null, sched, 0.2, g)["null"]
                       for _ in range(400)])
    assert 0.15 < drops.float().mean().item() < 0.25


def test_audio_guidance_formula_and_sampler_keeps_first_frame():
    from train.avsyncd_diffusion import DiffusionConfig, guided_eps, sample, sample_scheduler

    rec = Recorder()
    x = torch.randn(2, 12, 4, 4, 4)
    audio, null = torch.randn(2, 12, 5, 8), torch.randn(1, 12, 5, 8)
    text = torch.randn(2, 7, 8)
    eps = guided_eps(rec, x, 10, text, audio, null, 4.0)
    e_null = rec(x, 10, text, null.expand_as(audio)).sample
    e_audio = rec(x, 10, text, audio).sample
    torch.testing.assert_close(eps, (1 - 4.0) * e_null + 4.0 * e_audio)
    rec.calls.clear()
    torch.testing.assert_close(guided_eps(rec, x, 10, text, audio, null, 1.0), e_audio)
    assert len(rec.calls) == 1  # eta = 1: no null pass
    first = torch.randn(2, 4, 4, 4)
    rec.calls.clear()
    out = sample(rec, first, text, audio, null, sample_scheduler(DiffusionConfig()), 12, steps=3, guidance=4.0)
    assert out.shape == (2, 12, 4, 4, 4) and torch.equal(out[:, 0], first)
    assert all(torch.equal(c[0][:2, 0], first) for c in rec.calls)  # every step sees the clean first frame


# ------------------------------------------------------------------------------------- data


def test_clips_from_shards(shard_dir):
    from train.avsyncd_data import AVSyncDClipSpec, AVSyncDClips

    spec = AVSyncDClipSpec(height=32, width=48)
    clips = list(AVSyncDClips(str(shard_dir / "train-*.tar"), spec, repeat=False, random_window=False))
    assert len(clips) == 4
    c = clips[0]
    assert c["video"].shape == (12, 3, 32, 48) and c["mel"].shape == (1, 128, 204) and c["label"] == "bounce"
    assert c["video"].min() >= -1 and c["video"].max() <= 1 and c["wave"].shape == (32000,)
    assert AVSyncDClipSpec(height=128, width=256).num_frames == 12


# ------------------------------------------------------------------------------------- the tiny run


def fixed_loss(unet, parts, clips, null_audio, spec, seed=0) -> float:
    from train.avsyncd_data import collate
    from train.avsyncd_diffusion import DiffusionConfig, train_scheduler, training_loss
    from train.models.avsyncd import segment_audio_tokens

    b = collate(clips)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        lat = parts.encode_frames(b["video"], torch.Generator().manual_seed(seed))
        text = parts.encode_text(b["label"])
        audio = segment_audio_tokens(parts.encode_audio(b["mel"]), spec.num_frames)
        losses = [training_loss(unet, lat, text, audio, null_audio, train_scheduler(DiffusionConfig()), 0.0, g)["loss"]
                  for _ in range(8)]
    return float(torch.stack(losses).mean())


def test_tiny_overfits_four_clips_and_samples(tiny_run, tiny_components, shard_dir, tmp_path):
    """40 steps on the 4 test clips (CPU): the loss on fixed noise falls below 0.75x its start (measured 0.59x), a checkpoint and
    a complete final/unet are written, and the sampler turns the result into an mp4 with audio + sidecar."""
    from media.decode import decode_video
    from train.avsyncd_data import AVSyncDClips
    from train.sample_avsyncd import main as sample_main

    from train.models.avsyncd import segment_audio_tokens

    cfg, r = tiny_run
    assert r["random_weights"] is True and len(r["history"]) == 40
    spec = r["spec"]
    # the null audio is ImageBind's tokens of an all-zero mel, one segment per frame
    zero = r["parts"].encode_audio(torch.zeros(1, 1, 128, 204))
    torch.testing.assert_close(r["null_audio"], segment_audio_tokens(zero, 12))
    clips = list(AVSyncDClips(str(shard_dir / "train-*.tar"), spec, repeat=False, random_window=False))
    fresh = unet_from_sd(str(tiny_components), audio_cross_attention_dim=32).eval()
    before = fixed_loss(fresh, r["parts"], clips, r["null_audio"], spec)
    after = fixed_loss(r["unet"].eval(), r["parts"], clips, r["null_audio"], spec)
    print(f"fixed-noise loss {before:.4f} -> {after:.4f} ({after / before:.2f}x)")
    assert after < 0.75 * before, (before, after)
    final = r["final"]
    assert json.loads(open(f"{final}/avsyncd.json").read())["random_weights"] is True
    from PIL import Image
    import soundfile as sf

    clip = clips[1]
    Image.fromarray(((clip["video"][0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()).save(tmp_path / "first.png")
    sf.write(tmp_path / "clip.wav", clip["wave"].numpy(), 16000)
    out = tmp_path / "sample.mp4"
    rc = sample_main(["--checkpoint", final, "--image", str(tmp_path / "first.png"), "--audio", str(tmp_path / "clip.wav"),
                      "--label", "bounce", "--out", str(out), "--steps", "3"])
    assert rc == 0
    v = decode_video(out)
    assert v.frames.shape[0] == 12 and v.audio is not None and abs(v.duration - 2.0) < 0.2
    side = json.loads((tmp_path / "sample.json").read_text())
    assert side["random_weights"] is True and side["guidance_scale"] == 4.0 and side["label"] == "bounce"
    assert side["checkpoint"] == final and side["seed"] == 0 and side["image"].endswith("first.png")
    # from a condition record (pipelines.conditions): image, audio and label come from it, and the sidecar names
    # the reference segment and clip so pipelines.evaluate can pair the sample
    from evaluation.conditions import ConditionConfig, write_conditions

    recs = write_conditions(ConditionConfig(reference=str(shard_dir / "train-*.tar"), out=str(tmp_path / "cond"),
                                            protocol="avsync15"), progress=False)
    rec = recs[1]
    cond_file = tmp_path / "cond" / rec["image"].replace(".png", ".json")
    out2 = tmp_path / "from_condition.mp4"
    assert sample_main(["--checkpoint", final, "--condition", str(cond_file), "--out", str(out2), "--steps", "2"]) == 0
    side = json.loads(out2.with_suffix(".json").read_text())
    assert side["reference"] == rec["reference"] and side["clip_start"] == rec["clip_start"]
    assert side["label"] == rec["label"] and side["image"] == str((tmp_path / "cond" / rec["image"]).resolve())


def test_resume_continues_from_the_latest_checkpoint(tiny_run):
    from safetensors.torch import load_file

    from train.avsyncd import checkpoints, train

    cfg, r = tiny_run
    cks = checkpoints(cfg.out_dir)
    assert [c.name for c in cks] == ["checkpoint-000020", "checkpoint-000040"]
    saved = load_file(str(cks[-1] / "unet_trainable.safetensors"))
    live = r["unet"].trainable_state_dict()
    assert saved.keys() == live.keys() and all(torch.equal(saved[k], live[k]) for k in saved)
    cfg.steps = 42
    r2 = train(cfg)
    assert [h["step"] for h in r2["history"]] == [41, 42]
    assert [c.name for c in checkpoints(cfg.out_dir)][-1] == "checkpoint-000042"


# ------------------------------------------------------------------------------------- command lines


def test_train_cli_user_errors(capsys, tmp_path):
    from train.avsyncd import main

    assert main(["--shards", str(tmp_path / "nothing-*.tar"), "--preset", "tiny"]) == 2
    assert "error: no shards match" in capsys.readouterr().err
    assert main(["--shards", "x", "lrr=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown setting 'lrr' (did you mean 'lr'?)")
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "--shards" in capsys.readouterr().out


def test_train_cli_prints_the_parameter_table(capsys):
    from train.avsyncd import main

    assert main(["--print-params"]) == 0
    out = capsys.readouterr().out
    assert "conv_temp" in out and "191.44 M" in out


def test_sample_cli_user_errors(capsys, tmp_path):
    from train.sample_avsyncd import main

    (tmp_path / "a.wav").write_bytes(b"")
    assert main(["--image", str(tmp_path / "none.png"), "--audio", str(tmp_path / "a.wav"), "--label", "x"]) == 2
    assert "error: --image" in capsys.readouterr().err
    img = tmp_path / "i.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(img)
    assert main(["--image", str(img), "--audio", str(tmp_path / "a.wav")]) == 2
    assert "--label is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--guidance" in capsys.readouterr().out


def test_clip_stream_splits_segments_between_processes_and_workers(shard_dir):
    """Every (process, DataLoader worker) reader of a distributed run gets disjoint segments and together they
    read every segment once per epoch, with or without a shuffle buffer (the shared `ShardStream` split)."""
    from train.avsyncd_data import AVSyncDClipSpec, AVSyncDClips

    spec = AVSyncDClipSpec(height=16, width=16)
    pattern = str(shard_dir / "train-*.tar")
    everything = sorted(c["key"] for c in AVSyncDClips(pattern, spec, repeat=False))
    assert len(everything) >= 4
    for shuffle in (0, 3):
        seen = []
        for rank in range(2):
            ds = AVSyncDClips(pattern, spec, shuffle=shuffle, repeat=False, seed=5, rank=rank, world_size=2)
            for worker in range(2):
                keys = [c["key"] for c in ds.iter_reader(worker, 2)]
                assert keys, (rank, worker)
                seen += keys
        assert sorted(seen) == everything, shuffle
