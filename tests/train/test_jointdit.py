"""JointDiT: layer matching, joint attention masks, guidance, timestep maps, trainable set, I/O, training."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from tests.train.conftest import randomize_joint
from train.diffusion import Condition, DiffusionConfig, JointDiffusion, ddpm_timestep, edm_log_sigma
from train.models.jointdit import JointDiT, layer_matching, match_experts


# ------------------------------------------------------------------------------------ layer matching


def test_layer_matching_paper_case():
    assert layer_matching(8, 1) == [1, 2, 3, 4, 5, 5, 5, 5]
    assert layer_matching(9, 1) == [1, 2, 3, 4, 5, 5, 5, 5, 5]
    v, a = match_experts(8, 9, 1)
    assert (len(v.input), len(v.joints), len(v.output)) == (1, 3, 4)
    assert v.input == [0] and a.input == [0] and len(a.joints) == 3 and a.output == [4, 5, 6, 7, 8]


def test_layer_matching_larger_block_size_gives_fewer_joint_blocks():
    assert [len(match_experts(8, 9, b)[0].joints) for b in (1, 2, 3)] == [3, 2, 1]
    assert layer_matching(8, 2) == [0, 1, 1, 2, 3, 3, 3, 3]
    # different depths: joint blocks are the union, a shallower expert has empty expert parts
    v, a = match_experts(8, 12, 1)
    assert len(v.joints) == len(a.joints) == 5 and v.joints[-1] == [] and a.joints[-1] == [5]


@pytest.mark.parametrize("b", [0, 4, 5])
def test_layer_matching_rejects_block_size_out_of_range(b):
    with pytest.raises(ValueError):
        match_experts(8, 9, b)


# --------------------------------------------------------------------------------------- timesteps


def test_timestep_maps():
    cfg = DiffusionConfig()
    assert edm_log_sigma(torch.tensor(0.5), cfg.p_mean, cfg.p_std).item() == pytest.approx(cfg.p_mean, abs=1e-6)
    assert edm_log_sigma(torch.tensor(0.8413447), 0.0, 1.0).item() == pytest.approx(1.0, abs=1e-4)  # Phi(1)
    t = ddpm_timestep(torch.tensor([1e-7, 0.001, 0.0011, 0.5, 1.0]))
    assert t.tolist() == [1, 1, 2, 500, 1000]


# -------------------------------------------------------------------------------------- the network


def _inputs(model, b=1, seed=0, t_audio=50):
    g = torch.Generator().manual_seed(seed)
    vc = model.video_unet.config
    return dict(
        video_sample=torch.randn(b, 14, vc.in_channels, 16, 16, generator=g),
        video_timestep=torch.full((b,), 0.3),
        audio_sample=torch.randn(b, 8, t_audio, 16, generator=g),
        audio_timestep=torch.full((b,), 500),
        image_embeds=torch.randn(b, 1, 32, generator=g),
        added_time_ids=torch.tensor([[6.0, 127.0, 0.02]] * b),
    )


def test_fresh_jointdit_equals_the_two_experts(tiny_parts):
    model = copy.deepcopy(tiny_parts[0]).eval()
    x = _inputs(model)
    x["image_embeds"] = torch.zeros_like(x["image_embeds"])  # the audio expert has no image input
    with torch.no_grad():
        ov, oa = model(**x)
        rv = model.video_unet(x["video_sample"], x["video_timestep"], x["image_embeds"], x["added_time_ids"]).sample
        ra = model.audio_unet(x["audio_sample"], x["audio_timestep"], encoder_hidden_states=None).sample
    torch.testing.assert_close(ov, rv, atol=1e-3, rtol=1e-3)  # fp32 reordering noise
    torch.testing.assert_close(oa, ra, atol=1e-5, rtol=0)


def test_block_diagonal_mask_isolates_video_from_audio(tiny_parts):
    model = randomize_joint(copy.deepcopy(tiny_parts[0])).eval()
    x = _inputs(model)
    y = dict(x, audio_sample=torch.randn_like(x["audio_sample"]))
    with torch.no_grad():
        bd_x, bd_y = model(**x, attention_mode="block_diagonal")[0], model(**y, attention_mode="block_diagonal")[0]
        full_x, full_y = model(**x)[0], model(**y)[0]
    torch.testing.assert_close(bd_x, bd_y, atol=1e-6, rtol=0)  # audio cannot reach video
    assert (full_x - full_y).abs().max() > 1e-4


def test_jointcfg_star_uses_model_without_full_attention(tiny_parts):
    model = randomize_joint(copy.deepcopy(tiny_parts[0])).eval()
    no_attn = copy.deepcopy(model)
    with torch.no_grad():
        for blk in no_attn.joint_blocks:  # remove the full-attention layers' contribution
            for lin in (blk.attn.out_v, blk.attn.out_a):
                lin.weight.zero_()
                lin.bias.zero_()
    d = JointDiffusion()
    x = _inputs(model)
    v_t = torch.randn(1, 14, 4, 8, 8)
    cond = Condition(torch.randn(1, 4, 8, 8), x["image_embeds"], x["added_time_ids"])
    sig, tid, w = torch.tensor([2.0]), torch.tensor([400]), 1.7
    with torch.no_grad():
        gv, ga = d.guided(model, v_t, sig, x["audio_sample"], tid, cond, "jointcfg_star", w)
        cv, ca, _, _ = d.denoise(model, v_t, sig, x["audio_sample"], tid, cond, "full")
        nv, na, _, _ = d.denoise(no_attn, v_t, sig, x["audio_sample"], tid, cond.null(), "full")
        fv, _, _, _ = d.denoise(model, v_t, sig, x["audio_sample"], tid, cond.null(), "full")
        jv, _ = d.guided(model, v_t, sig, x["audio_sample"], tid, cond, "jointcfg", w)
    torch.testing.assert_close(gv, cv + w * (cv - nv), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ga, ca + w * (ca - na), atol=1e-5, rtol=1e-5)
    assert (nv - fv).abs().max() > 1e-4 and (jv - gv).abs().max() > 1e-5


def test_exactly_the_intended_parameters_are_trainable(tiny_parts):
    model = copy.deepcopy(tiny_parts[0])
    model.set_trainable()
    for n, p in model.named_parameters():
        if n.startswith(("joint_blocks.", "audio_unet.", "audio_image_proj.")):
            assert p.requires_grad, n
        else:
            assert n.startswith("video_unet.")
            assert p.requires_grad == ("temporal_transformer_blocks" in n or "time_mixer" in n), n
    v_train = sum(p.numel() for n, p in model.video_unet.named_parameters() if p.requires_grad)
    assert 0 < v_train < sum(p.numel() for p in model.video_unet.parameters())
    # gradients reach joint blocks and experts' trainable layers only
    randomize_joint(model)
    out_v, out_a = model(**_inputs(model))
    (out_v.square().mean() + out_a.square().mean()).backward()
    assert model.joint_blocks[0].attn.qk_v.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.video_unet.conv_in.parameters())


def test_save_load_round_trip_reproduces_outputs(tiny_parts, tmp_path):
    model = randomize_joint(copy.deepcopy(tiny_parts[0]), seed=3).eval()
    model.save_pretrained(tmp_path / "jd")
    assert (tmp_path / "jd" / "diffusion_pytorch_model.safetensors").exists()
    loaded = JointDiT.from_pretrained(tmp_path / "jd").eval()
    # what is deterministic is compared exactly: every saved tensor
    sa, sb = model.state_dict(), loaded.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    # outputs of two instances may differ in the last bits on some CPUs (kernel choice depends on memory
    # layout): compared with a tolerance far below any real difference
    x = _inputs(model, seed=1)
    with torch.no_grad():
        a, b = model(**x), loaded(**x)
    torch.testing.assert_close(a[0], b[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(a[1], b[1], atol=1e-4, rtol=1e-4)


def test_paper_preset_parameter_counts_on_meta_device():
    from train.experts import PAPER_TABLE, meta_parameter_table

    c = meta_parameter_table("paper")
    for k, tol in [("VideoVAE", 0.01), ("AudioVAE", 0.01), ("AudioVocoder", 0.01), ("CLIP+proj", 0.01),
                   ("V-Expert", 0.03), ("V-Expert temporal (trainable)", 0.02), ("A-Expert", 0.05),
                   ("JointBlock w/o Expert", 0.05)]:
        assert abs(c[k] - PAPER_TABLE[k]) / PAPER_TABLE[k] < tol, (k, c[k])


# -------------------------------------------------------------------------------------------- data


def test_clip_shapes_and_audioldm2_mel(shard_dir):
    from media.shards import iter_segments
    from train.data import ClipSpec, clip_from_sample

    spec = ClipSpec(height=16, width=16)
    clip = clip_from_sample(next(iter_segments(str(shard_dir / "*.tar"))), spec)
    assert clip["video"].shape == (14, 3, 16, 16) and clip["audio"].shape == (32000,)
    assert clip["mel"].shape == (1, 200, 64)
    assert clip["audio"].abs().max() == pytest.approx(0.5, abs=1e-3)
    # clicks make the mel energy vary over time
    assert clip["mel"].mean(-1).std() > 0.5


# --------------------------------------------------------------------------------- train + sample


def test_train_resume_and_sample_writes_sounding_mp4(shard_dir, tiny_experts, tmp_path):
    import av

    from train.jointdit import main as train_main
    from train.sample_jointdit import main as sample_main

    out = tmp_path / "run"
    common = ["--shards", str(shard_dir / "*.tar"), "--out-dir", str(out), "--height", "16", "--width", "16",
              "--batch-size", "1", "--shuffle", "0", "--no-progress", "--video-model", tiny_experts[0],
              "--audio-model", tiny_experts[1]]
    r = train_main(common + ["--steps", "1", "--save-every", "1"])
    assert r["random_weights"] and len(r["history"]) == 1
    r2 = train_main(common + ["--steps", "2", "--save-every", "1", "--resume", "latest"])
    assert [h["step"] for h in r2["history"]] == [2]
    ck = out / "checkpoint-000002"
    assert json.loads((ck / "state.json").read_text())["random_weights"] is True

    from media.encode import encode_mp4

    img = tmp_path / "first.png"
    with av.open(str(img), "w", format="image2") as c:  # a png first frame
        s = c.add_stream("png", rate=1)
        s.width, s.height, s.pix_fmt = 16, 16, "rgb24"
        import numpy as np

        fr = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 128, np.uint8), format="rgb24")
        for p in s.encode(fr):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    del encode_mp4
    mp4 = tmp_path / "clip.mp4"
    info = sample_main(["--checkpoint", str(ck), "--image", str(img), "--out", str(mp4), "--steps", "2",
                        "--guidance", "jointcfg_star", "--device", "cpu"])
    assert info["audio_seconds"] == pytest.approx(2.0) and info["frames"] == 14
    with av.open(str(mp4)) as c:
        vs, as_ = c.streams.video[0], c.streams.audio[0]
        n = sum(1 for _ in c.decode(video=0))
        adur = float(as_.duration * as_.time_base)
    assert n == 14 and float(vs.average_rate) == pytest.approx(7.0)
    assert adur == pytest.approx(2.0, abs=0.07)

    # from a condition record cut from the test shards: the first frame comes from the shard, the sidecar names the
    # reference segment and clip (what pipelines.evaluate pairs on); settings also from a --config file
    from evaluation.conditions import ConditionConfig, write_conditions

    recs = write_conditions(ConditionConfig(reference=str(shard_dir / "*.tar"), out=str(tmp_path / "cond")), progress=False)
    rec = recs[0]
    (tmp_path / "sample.yaml").write_text("steps: 1\nguidance: cfg\n")
    mp4b = tmp_path / "gen" / "c.mp4"
    info = sample_main(["--checkpoint", str(ck), "--condition", str(tmp_path / "cond" / rec["image"].replace(".png", ".json")),
                        "--out", str(mp4b), "--config", str(tmp_path / "sample.yaml"), "seed=3"])
    side = json.loads(mp4b.with_suffix(".json").read_text())
    assert side["reference"] == rec["reference"] and side["clip_start"] == rec["clip_start"]
    assert side["label"] == rec["label"] and side["image"].endswith(rec["image"])
    assert side["steps"] == 1 and side["guidance"] == "cfg" and side["seed"] == 3 and side["random_weights"] is True


@pytest.fixture(scope="module")
def latent_dir(shard_dir, tiny_experts, tmp_path_factory):
    from train.cache_latents import cache_latents

    d = tmp_path_factory.mktemp("latents")
    assert len(cache_latents(str(shard_dir / "*.tar"), d, *tiny_experts, height=16, width=16)) == 1
    return d


def test_gradient_checkpointing_gives_the_same_training_step(latent_dir, tiny_experts, tmp_path):
    from train.jointdit import main as train_main

    common = ["--latents", str(latent_dir / "*.tar"), "--batch-size", "2", "--no-progress", "--steps", "2",
              "--video-model", tiny_experts[0], "--audio-model", tiny_experts[1], "--shuffle", "0"]
    a = train_main(common + ["--out-dir", str(tmp_path / "a")])["history"]
    b = train_main(common + ["--out-dir", str(tmp_path / "b"), "--gradient-checkpointing"])["history"]
    assert [h["loss"] for h in a] == pytest.approx([h["loss"] for h in b], rel=1e-4)


def test_overfitting_four_clips_halves_the_loss(latent_dir, tiny_experts, tmp_path):
    """Latents of the 4 test-shard clips cached once (train.cache_latents), train on them, compare a
    fixed-noise evaluation loss before and after."""
    from train.data import LatentClips, collate
    from train.jointdit import added_time_ids, main as train_main

    lat_dir = latent_dir
    batch = collate(list(LatentClips(str(lat_dir / "*.tar"), repeat=False)))
    cond = Condition(batch["image_latents"], batch["image_embeds"], added_time_ids(4, 7.0, 127, 0.02, "cpu"))
    d = JointDiffusion()

    def eval_loss(model):
        g = torch.Generator().manual_seed(123)
        tot = 0.0
        with torch.no_grad():
            for u in (0.2, 0.4, 0.6, 0.8):
                tot += d.training_losses(model.eval(), batch["video_latents"], batch["audio_latents"], cond,
                                         t_uni=torch.full((4,), u), generator=g)["loss"].item()
        return tot / 4

    common = ["--latents", str(lat_dir / "*.tar"), "--out-dir", str(tmp_path / "run"), "--batch-size", "4",
              "--no-progress", "--video-model", tiny_experts[0], "--audio-model", tiny_experts[1],
              "--cond-drop", "0", "--lr", "3e-3", "--save-every", "1000", "--log-every", "20"]
    r0 = train_main(common + ["--steps", "0"])
    before = eval_loss(r0["model"])
    r = train_main(common + ["--steps", "120"])
    after = eval_loss(r["model"])
    assert after < 0.5 * before, (before, after)
    assert r["history"][-1]["steps_per_s"] > 0


def test_config_file_with_cli_overrides(tmp_path):
    from train.jointdit import parse_args

    cfg, _ = parse_args(["--config", "train/configs/jointdit_paper.yaml", "--steps", "5", "--no-gradient-checkpointing"])
    assert (cfg.preset, cfg.steps, cfg.gradient_checkpointing, cfg.mixed_precision) == ("paper", 5, False, "bf16")
    assert cfg.num_workers == 4  # preset default filled in
    bad = tmp_path / "bad.json"
    bad.write_text('{"stepz": 3}')
    from common.config import ConfigError

    with pytest.raises(ConfigError, match=r"unknown setting 'stepz' \(did you mean 'steps'\?\)"):
        parse_args(["--config", str(bad)])
