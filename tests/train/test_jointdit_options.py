"""JointDiT options: the paper's architecture ablations, the sounding-video baseline's timestep adjustment,
independent timesteps and CMC-PE, and the joint-attention token counts."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from tests.train.conftest import randomize_joint, write_png
from train.diffusion import (Condition, DiffusionConfig, JointDiffusion, adjust_unified, adjusted_timesteps,
                             ddpm_timestep, edm_log_sigma)
from train.models.jointdit import CrossModalPE, JointDiT, VanillaJointAttention, joint_token_counts


def variant(tiny_parts, seed=0, **options) -> JointDiT:
    """A JointDiT on copies of the tiny experts with the given options (joint layers random-init by `seed`)."""
    base = tiny_parts[0]
    torch.manual_seed(seed)
    m = JointDiT.from_experts(copy.deepcopy(base.video_unet), copy.deepcopy(base.audio_unet), block_size=1,
                              qk_dim=32, value_dim=48, heads=4, ff_mult=2.0, clip_dim=32, num_frames=14, **options)
    return m.eval()


def inputs(b=1, seed=0, hw=(8, 8), t_audio=50):
    g = torch.Generator().manual_seed(seed)
    return dict(
        video_sample=torch.randn(b, 14, 8, *hw, generator=g),
        video_timestep=torch.full((b,), 0.3),
        audio_sample=torch.randn(b, 8, t_audio, 16, generator=g),
        audio_timestep=torch.full((b,), 500),
        image_embeds=torch.randn(b, 1, 32, generator=g),
        added_time_ids=torch.tensor([[6.0, 127.0, 0.02]] * b),
    )


def run(model, x, mode="full"):
    with torch.no_grad():
        return model(**x, attention_mode=mode)


def other_audio(x, seed=9):
    return dict(x, audio_sample=torch.randn(x["audio_sample"].shape, generator=torch.Generator().manual_seed(seed)))


def other_video(x, seed=9):
    return dict(x, video_sample=torch.randn(x["video_sample"].shape, generator=torch.Generator().manual_seed(seed)))


# ------------------------------------------------------------------------------------ token counts


def test_joint_token_counts_for_the_paper_shapes_from_the_shipped_configs():
    """256x256 video -> SVD latents 14x32x32; 2 s audio -> 200x64 mel -> AudioLDM2 latents 50x16."""
    from train.experts import _cfg

    v, a = _cfg("paper", "svd_unet"), _cfg("paper", "audioldm2_unet")
    assert joint_token_counts(v, a, 1, (14, 32, 32), (50, 16)) == [(896, 52), (224, 14), (224, 14)]
    assert joint_token_counts(v, a, 2, (14, 32, 32), (50, 16)) == [(224, 14), (224, 14)]


def test_joint_token_counts_on_a_meta_device_paper_model():
    """The model method on a paper-size JointDiT built on the meta device (no memory, no weights)."""
    from diffusers import UNetSpatioTemporalConditionModel

    from train.experts import _cfg, audio_unet_self_attention_only_meta
    from diffusers.pipelines.audioldm2.modeling_audioldm2 import AudioLDM2UNet2DConditionModel

    with torch.device("meta"):
        a = audio_unet_self_attention_only_meta(AudioLDM2UNet2DConditionModel(**_cfg("paper", "audioldm2_unet")))
        v = UNetSpatioTemporalConditionModel(**_cfg("paper", "svd_unet"))
        m = JointDiT.from_experts(v, a, qk_dim=512, value_dim=1024, heads=8, ff_mult=4.0)
    assert m.joint_token_counts((14, 32, 32), (50, 16))[0] == (896, 52)


@pytest.mark.parametrize("hw,t_audio", [((8, 8), 50), ((5, 7), 37)])
def test_joint_token_counts_match_a_real_forward(tiny_parts, hw, t_audio):
    model = variant(tiny_parts)
    seen = []
    for blk in model.joint_blocks:
        blk.register_forward_pre_hook(lambda mod, args: seen.append((args[0].shape[1], args[1].shape[1])))
    run(model, inputs(hw=hw, t_audio=t_audio))
    assert seen == model.joint_token_counts((14, *hw), (t_audio, 16))
    assert len(seen) == 3


# ----------------------------------------------------------------------------- ablation: no joint blocks


def test_without_joint_blocks_the_experts_run_separately(tiny_parts):
    model = randomize_joint(variant(tiny_parts, use_joint_blocks=False))
    assert model.num_joint_blocks == 0 and not any(n.startswith("joint_blocks.") for n, _ in model.named_parameters())
    assert model.config.use_joint_blocks is False
    x = inputs()
    v, a = run(model, x)
    v2, a2 = run(model, other_audio(x))
    v3, a3 = run(model, other_video(x))
    torch.testing.assert_close(v, v2, atol=1e-6, rtol=0)  # audio cannot reach video
    torch.testing.assert_close(a, a3, atol=1e-6, rtol=0)  # video cannot reach audio
    assert (a - a2).abs().max() > 1e-3 and (v - v3).abs().max() > 1e-3
    # the video branch is the stock SVD UNet
    with torch.no_grad():
        ref = model.video_unet(x["video_sample"], x["video_timestep"], x["image_embeds"], x["added_time_ids"]).sample
    torch.testing.assert_close(v, ref, atol=1e-3, rtol=1e-3)
    # with Joint blocks (same expert weights) audio does reach video
    full = randomize_joint(variant(tiny_parts))
    assert (run(full, x)[0] - run(full, other_audio(x))[0]).abs().max() > 1e-4


def test_without_joint_blocks_jointcfg_is_refused_and_cmc_pe_needs_joint_blocks(tiny_parts):
    model = variant(tiny_parts, use_joint_blocks=False)
    x = inputs()
    cond = Condition(torch.randn(1, 4, 8, 8), x["image_embeds"], x["added_time_ids"])
    d = JointDiffusion()
    args = (model, torch.randn(1, 14, 4, 8, 8), torch.tensor([2.0]), x["audio_sample"], torch.tensor([400]), cond)
    with pytest.raises(ValueError, match="needs Joint blocks"):
        d.guided(*args, "jointcfg_star", 1.5)
    with torch.no_grad():
        d.guided(*args, "cfg", 1.5)
    with pytest.raises(ValueError, match="cmc_pe needs the Joint blocks"):
        variant(tiny_parts, use_joint_blocks=False, cmc_pe=True)


# ------------------------------------------------------------------------ ablation: vanilla attention


def test_vanilla_joint_attention_shares_qkv_and_still_joins_the_modalities(tiny_parts):
    fresh = variant(tiny_parts, joint_attention="vanilla")
    attn = fresh.joint_blocks[0].attn
    assert isinstance(attn, VanillaJointAttention) and fresh.config.joint_attention == "vanilla"
    names = {n.split(".")[-2] for n, _ in fresh.joint_blocks[0].attn.named_parameters()}
    assert names == {"in_v", "in_a", "qkv", "out_v", "out_a"}  # one Q/K/V projection for both modalities
    perceiver = variant(tiny_parts)
    x = inputs()
    # zero-initialised gates: a fresh model is the two experts, whatever the attention
    torch.testing.assert_close(run(fresh, x)[0], run(perceiver, x)[0], atol=1e-5, rtol=0)
    model = randomize_joint(fresh)
    v, _ = run(model, x)
    assert (v - run(model, other_audio(x))[0]).abs().max() > 1e-4  # cross-modal attention works
    bd = run(model, x, "block_diagonal")[0]
    torch.testing.assert_close(bd, run(model, other_audio(x), "block_diagonal")[0], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="joint_attention"):
        variant(tiny_parts, joint_attention="linear")


# ----------------------------------------------------------------------------------------------- CMC-PE


def test_cmc_pe_is_local_in_time():
    """A change in the last audio rows changes the encoding of the last video frames only (linear
    interpolation onto the frame axis), and vice versa."""
    torch.manual_seed(0)
    pe = CrossModalPE(dim_v=6, dim_a=5)
    for lin in (pe.a2v, pe.v2a):
        torch.nn.init.normal_(lin.weight)
    f, s, t, m = 14, 4, 50, 3
    xv, xa = torch.randn(1, f * s, 6), torch.randn(1, t * m, 5)
    pv, pa = pe(xv, xa, (f, s, t, m))
    assert pv.shape == xv.shape and pa.shape == xa.shape
    xa2 = xa.clone().view(1, t, m, 5)
    xa2[:, -5:] += 3.0  # last 0.2 s of a 2 s clip
    pv2, _ = pe(xv, xa2.view(1, t * m, 5), (f, s, t, m))
    changed = (pv2 - pv).view(1, f, s, 6).abs().amax(dim=(0, 2, 3))
    assert changed[-1] > 0.1 and changed[: f - 2].max() == 0
    assert torch.equal(pv.view(1, f, s, 6)[:, :, 0], pv.view(1, f, s, 6)[:, :, 3])  # broadcast over space


class AlwaysBlockDiagonal(torch.nn.Module):
    """A joint attention that never lets the modalities attend to each other."""

    def __init__(self, attn):
        super().__init__()
        self.inner = attn

    def forward(self, xv, xa, rope_v, rope_a, block_diagonal=False):
        return self.inner(xv, xa, rope_v, rope_a, block_diagonal=True)


def test_cmc_pe_changes_outputs_only_through_the_cross_modal_path(tiny_parts):
    x = inputs()
    plain = variant(tiny_parts)
    fresh = variant(tiny_parts, cmc_pe=True)
    torch.testing.assert_close(run(fresh, x)[0], run(plain, x)[0], atol=1e-5, rtol=0)  # zero-init: no change
    model = randomize_joint(fresh)
    no_cmc = copy.deepcopy(model)
    with torch.no_grad():
        for blk in no_cmc.joint_blocks:
            for p in blk.cmc.parameters():
                p.zero_()
    assert (run(model, x)[0] - run(no_cmc, x)[0]).abs().max() > 1e-4
    # with the joint attention itself made block-diagonal, audio reaches video only through CMC-PE
    for m in (model, no_cmc):
        for blk in m.joint_blocks:
            blk.attn = AlwaysBlockDiagonal(blk.attn)
    assert (run(model, x)[0] - run(model, other_audio(x))[0]).abs().max() > 1e-4
    torch.testing.assert_close(run(no_cmc, x)[0], run(no_cmc, other_audio(x))[0], atol=1e-6, rtol=0)
    # block-diagonal (JointCFG's negative) has no cross-modal path, CMC-PE included
    model = randomize_joint(variant(tiny_parts, cmc_pe=True))
    torch.testing.assert_close(run(model, x, "block_diagonal")[0], run(model, other_audio(x), "block_diagonal")[0],
                               atol=1e-6, rtol=0)
    assert (run(model, x)[0] - run(model, other_audio(x))[0]).abs().max() > 1e-4


def test_options_are_saved_and_reloaded_with_the_model(tiny_parts, tmp_path):
    model = randomize_joint(variant(tiny_parts, cmc_pe=True, joint_attention="vanilla"), seed=4)
    model.save_pretrained(tmp_path / "jd")
    cfg = json.loads((tmp_path / "jd" / "config.json").read_text())
    assert (cfg["cmc_pe"], cfg["joint_attention"], cfg["use_joint_blocks"]) == (True, "vanilla", True)
    loaded = JointDiT.from_pretrained(tmp_path / "jd")
    assert loaded.config.cmc_pe and isinstance(loaded.joint_blocks[0].cmc, CrossModalPE)
    assert torch.equal(loaded.joint_blocks[1].cmc.a2v.weight, model.joint_blocks[1].cmc.a2v.weight)
    assert JointDiT.options_from_config(cfg)["cmc_pe"] is True
    old = {k: v for k, v in cfg.items() if k not in ("cmc_pe", "joint_attention", "use_joint_blocks")}
    assert "cmc_pe" not in JointDiT.options_from_config(old)  # configs from before the options: defaults


# --------------------------------------------------------------------------------- timestep adjustment


def test_timestep_adjustment_formula_values():
    """m(t) = round(T_v (t/T)^sqrt(gamma)), n(t) = round(T_a (t/T)^(1/sqrt(gamma))), gamma = 1.5."""
    m, n = adjusted_timesteps(torch.tensor([0, 1, 250, 500, 999, 1000]), 1000, 1000, 1000, 1.5)
    assert m.tolist() == [0, 0, 183, 428, 999, 1000]
    assert n.tolist() == [0, 4, 322, 568, 999, 1000]
    m, n = adjusted_timesteps(torch.tensor([10, 25]), 50, 1000, 200, 1.5)  # different T, T_v, T_a
    assert (m.tolist(), n.tolist()) == ([139, 428], [54, 114])
    m, n = adjusted_timesteps(torch.tensor([500]), 1000, 1000, 1000, 4.0)  # sqrt(gamma) = 2: 0.5^2, 0.5^0.5
    assert (m.item(), n.item()) == (250, 707)
    t = torch.arange(0, 1001, 37)
    assert all(torch.equal(z, t) for z in adjusted_timesteps(t, 1000, 1000, 1000, 1.0))  # gamma 1: off
    u = torch.tensor([0.0, 0.3, 1.0])
    assert all(torch.equal(z, u) for z in adjust_unified(u, 1.0))
    with pytest.raises(ValueError, match="timestep_gamma"):
        DiffusionConfig(timestep_gamma=0.0)


class Recorder(torch.nn.Module):
    """Stands in for JointDiT: records the timesteps it is given, predicts zeros."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.calls = []

    def forward(self, v_in, c_noise, a_t, t_index, image_embeds, added_time_ids, mode="full"):
        self.calls.append((c_noise.detach().clone(), t_index.detach().clone()))
        return torch.zeros_like(v_in[:, :, :4]), torch.zeros_like(a_t)


def _cond(b):
    return Condition(torch.zeros(b, 4, 2, 2), torch.zeros(b, 1, 8), torch.zeros(b, 3))


def test_sampler_uses_the_adjusted_local_timesteps():
    gamma, steps = 1.5, 5
    d = JointDiffusion(DiffusionConfig(timestep_gamma=gamma))
    rec = Recorder()
    d.sample(rec, _cond(1), (3, 4, 2, 2), (8, 4, 2), steps=steps, guidance="none")
    u = d.grid(steps)[:-1]
    c_noise = torch.stack([c for c, _ in rec.calls]).flatten()
    t_index = torch.stack([t for _, t in rec.calls]).flatten()
    sigma = edm_log_sigma(u ** math.sqrt(gamma), 0.7, 1.6).exp().clamp(0.002, 700.0)
    torch.testing.assert_close(c_noise, 0.25 * sigma.log(), atol=1e-5, rtol=0)
    assert torch.equal(t_index, ddpm_timestep(u ** (1 / math.sqrt(gamma))) - 1)
    # the audio index is Eq. 9's n(t) for t = 1000 u, up to JointDiT's ceil instead of round
    _, n = adjusted_timesteps(1000 * u.double(), 1000, 1000, 1000, gamma)
    assert ((t_index + 1) - n).abs().max() <= 1
    # video is less noisy and audio noisier than without the adjustment (gamma > 1)
    plain = Recorder()
    JointDiffusion().sample(plain, _cond(1), (3, 4, 2, 2), (8, 4, 2), steps=steps, guidance="none")
    c0 = torch.stack([c for c, _ in plain.calls]).flatten()
    t0 = torch.stack([t for _, t in plain.calls]).flatten()
    assert (c_noise[1:] < c0[1:]).all() and (t_index[1:] > t0[1:]).all()


def _training_timesteps(cfg: DiffusionConfig, b=2000):
    rec = Recorder()
    g = torch.Generator().manual_seed(0)
    JointDiffusion(cfg).training_losses(rec, torch.zeros(b, 2, 4, 2, 2), torch.zeros(b, 8, 4, 2), _cond(b), generator=g)
    c_noise, t_index = rec.calls[0]
    u_v = 0.5 * (1 + torch.erf((4 * c_noise - 0.7) / (1.6 * math.sqrt(2))))  # invert log sigma = Pm + Ps Phi^-1(u)
    u_a = (t_index + 1).double() / 1000
    return u_v.double(), u_a


def _corr(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_independent_timesteps_in_training():
    u_v, u_a = _training_timesteps(DiffusionConfig(independent_timesteps=True))
    assert abs(_corr(u_v, u_a)) < 0.1  # independent draws (2000 samples: |r| ~ 0.02)
    assert 0.45 < float(u_a.mean()) < 0.55 and 0.45 < float(u_v.mean()) < 0.55  # each still U(0, 1)
    u_v, u_a = _training_timesteps(DiffusionConfig())
    assert (u_v - u_a).abs().max() < 1.5e-3  # one unified timestep (audio index: ceil to 1/1000)
    u_v, u_a = _training_timesteps(DiffusionConfig(timestep_gamma=1.5))
    assert (u_v ** (1 / 1.5) - u_a).abs().max() < 2e-3  # u_a = u^(1/sqrt g), u_v = u^sqrt g: u_a = u_v^(1/g)


# ------------------------------------------------------------------------ training and sampler options


def test_training_options_are_typed_documented_fields():
    import dataclasses

    from common.config import field_docs
    from train.jointdit import TrainConfig, parse_args

    docs = field_docs(TrainConfig)
    for name in ("use_joint_blocks", "joint_attention", "cmc_pe", "timestep_gamma", "independent_timesteps"):
        assert name in {f.name for f in dataclasses.fields(TrainConfig)} and docs.get(name), name
    cfg, _ = parse_args(["--no-use-joint-blocks", "--joint-attention", "vanilla", "--timestep-gamma", "1.5",
                         "--independent-timesteps"])
    assert (cfg.use_joint_blocks, cfg.joint_attention, cfg.timestep_gamma, cfg.independent_timesteps) == (
        False, "vanilla", 1.5, True)


def test_option_mistakes_are_one_line_errors(capsys):
    from train.jointdit import cli

    assert cli(["--shards", "x.tar", "joint_attention=linear"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: joint_attention='linear': expected one of 'perceiver', 'vanilla'")
    assert cli(["--shards", "x.tar", "--cmc-pe", "--no-use-joint-blocks"]) == 2
    assert "cmc_pe=true needs use_joint_blocks=true" in capsys.readouterr().err
    assert cli(["--shards", "x.tar", "--timestep-gamma", "0"]) == 2
    assert "timestep_gamma must be > 0" in capsys.readouterr().err


def test_options_travel_from_training_to_the_checkpoint_and_the_sampler(latent_dir, tiny_experts, tmp_path, capsys):
    """One training step with CMC-PE, vanilla attention, gamma 1.5 and independent timesteps; the checkpoint
    reloads with them and the sampler uses the stored gamma (or its own); a model without Joint blocks
    refuses JointCFG in the sampler."""

    from train.jointdit import load_checkpoint, main as train_main
    from train.sample_jointdit import cli as sample_cli, main as sample_main

    common = ["--latents", str(latent_dir / "*.tar"), "--batch-size", "2", "--no-progress", "--steps", "1",
              "--video-model", tiny_experts[0], "--audio-model", tiny_experts[1], "--shuffle", "0", "--height", "16",
              "--width", "16"]
    r = train_main(common + ["--out-dir", str(tmp_path / "a"), "--cmc-pe", "--joint-attention", "vanilla",
                             "--timestep-gamma", "1.5", "--independent-timesteps"])
    assert r["model"].config.cmc_pe and math.isfinite(r["history"][0]["loss"])
    ck = tmp_path / "a" / "checkpoint-000001"
    model, _, state = load_checkpoint(ck)
    assert (model.config.cmc_pe, model.config.joint_attention) == (True, "vanilla")
    assert isinstance(model.joint_blocks[0].cmc, CrossModalPE)
    trained = r["model"].state_dict()
    assert torch.equal(model.state_dict()["joint_blocks.0.cmc.a2v.weight"], trained["joint_blocks.0.cmc.a2v.weight"])
    assert state["train_config"]["timestep_gamma"] == 1.5 and state["train_config"]["independent_timesteps"]

    img = tmp_path / "first.png"
    write_png(img, 90)
    base = ["--checkpoint", str(ck), "--image", str(img), "--steps", "1", "--device", "cpu"]
    assert sample_main(base + ["--out", str(tmp_path / "a.mp4")])["timestep_gamma"] == 1.5
    assert sample_main(base + ["--out", str(tmp_path / "b.mp4"), "--timestep-gamma", "1"])["timestep_gamma"] == 1.0

    train_main(common + ["--out-dir", str(tmp_path / "b"), "--no-use-joint-blocks"])
    ck_b = tmp_path / "b" / "checkpoint-000001"
    assert sample_cli(["--checkpoint", str(ck_b), "--image", str(img), "--out", str(tmp_path / "c.mp4"),
                       "--guidance", "jointcfg"]) == 2
    assert "needs Joint blocks" in capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def latent_dir(shard_dir, tiny_experts, tmp_path_factory):
    from train.cache_latents import cache_latents

    d = tmp_path_factory.mktemp("latents_opts")
    cache_latents(str(shard_dir / "*.tar"), d, *tiny_experts, height=16, width=16)
    return d
