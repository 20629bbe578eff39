"""JointDiT checkpoints: an interrupted and resumed run equals the uninterrupted one bit for bit (weights, EMA,
optimizer, schedule, random states, data position); EMA and LR schedule; force_upcast VAEs stay float32;
the sampler uses the checkpoint's EMA weights and its training diffusion settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.train.conftest import write_png
from train.jointdit import main as train_main


def _args(shard_dir, tiny_experts, out, steps, *extra):
    return ["--shards", str(shard_dir / "*.tar"), "--out-dir", str(out), "--height", "16", "--width", "16",
            "--batch-size", "1", "--shuffle", "3", "--num-workers", "0", "--no-progress", "--steps", str(steps),
            "--video-model", tiny_experts[0], "--audio-model", tiny_experts[1], "--gradient-accumulation-steps", "2",
            "--lr-warmup-steps", "3", "--lr", "1e-3", "--ema-decay", "0.9", "--p-mean", "-0.4", "--p-std", "0.9",
            "--save-every", "100", *extra]


@pytest.fixture(scope="module")
def runs(shard_dir, tiny_experts, tmp_path_factory):
    """5 updates straight; 3 updates, stop, resume to 5 (4 clips per epoch, 2 micro-batches per update: the
    restart is in the middle of the second epoch)."""
    d = tmp_path_factory.mktemp("resume")
    straight = train_main(_args(shard_dir, tiny_experts, d / "straight", 5))
    first = train_main(_args(shard_dir, tiny_experts, d / "split", 3))
    resumed = train_main(_args(shard_dir, tiny_experts, d / "split", 5, "--resume", "latest"))
    return d, straight, first, resumed


def test_resume_is_bit_identical_to_the_uninterrupted_run(runs):
    d, straight, first, resumed = runs
    assert [h["step"] for h in first["history"]] == [1, 2, 3] and [h["step"] for h in resumed["history"]] == [4, 5]
    assert [h["loss"] for h in straight["history"]] == [h["loss"] for h in first["history"] + resumed["history"]]
    a, b = d / "straight" / "checkpoint-000005", d / "split" / "checkpoint-000005"
    for name in ("jointdit_trainable.safetensors", "ema.safetensors", "optimizer.safetensors"):
        sa, sb = load_file(str(a / name)), load_file(str(b / name))
        assert sa.keys() == sb.keys() and len(sa) > 10, name
        for k in sa:
            assert torch.equal(sa[k], sb[k]), (name, k)
    sta, stb = (json.loads((p / "state.json").read_text()) for p in (a, b))
    assert sta["scheduler"] == stb["scheduler"] and sta["batches_consumed"] == stb["batches_consumed"] == 10
    assert json.loads((a / "rng-rank0.json").read_text()) == json.loads((b / "rng-rank0.json").read_text())
    # the resumed run did move the weights on from its step-3 checkpoint
    s3 = load_file(str(d / "split" / "checkpoint-000003" / "jointdit_trainable.safetensors"))
    sb = load_file(str(b / "jointdit_trainable.safetensors"))
    assert any(not torch.equal(s3[k], sb[k]) for k in s3)


def test_warmup_schedule_and_ema(runs):
    d, straight, _, _ = runs
    lrs = [h["lr"] for h in straight["history"]]  # constant_with_warmup, 3 warm-up updates (diffusers: from 0)
    assert lrs == pytest.approx([0.0, 1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3])
    ck = d / "straight" / "checkpoint-000005"
    raw, ema = load_file(str(ck / "jointdit_trainable.safetensors")), load_file(str(ck / "ema.safetensors"))
    assert raw.keys() == ema.keys()
    # EMA with warm-up: decay_n = min(0.9, (1 + n) / (10 + n)); an average of the trajectory, not the last weights
    assert max((raw[k] - ema[k]).abs().max().item() for k in raw) > 1e-6
    assert json.loads((ck / "state.json").read_text())["ema_updates"] == 5


def test_cosine_and_linear_schedules_decay_to_zero():
    from diffusers.optimization import get_scheduler

    for name in ("cosine", "linear"):
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        s = get_scheduler(name, opt, num_warmup_steps=2, num_training_steps=10)
        lrs = []
        for _ in range(10):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            s.step()
        assert lrs[:3] == pytest.approx([0.0, 0.5, 1.0]) and lrs[-1] <= 0.125 + 1e-9 and all(np.diff(lrs[2:]) <= 0)


def test_sampler_uses_ema_and_the_training_diffusion_config(runs, tmp_path, monkeypatch):
    from train.diffusion import JointDiffusion
    from train.jointdit import load_checkpoint
    from train.sample_jointdit import main as sample_main

    d, *_ = runs
    ck = d / "straight" / "checkpoint-000005"
    model, _, state = load_checkpoint(ck)
    assert state["weights"] == "ema"
    ema = load_file(str(ck / "ema.safetensors"))
    sd = model.state_dict()
    assert all(torch.equal(sd[k], ema[k]) for k in ema)

    img = tmp_path / "first.png"
    write_png(img, 90)
    used = []
    orig = JointDiffusion.sample

    def spy(self, *a, **k):
        used.append(self.cfg)
        return orig(self, *a, **k)

    monkeypatch.setattr(JointDiffusion, "sample", spy)
    info = sample_main(["--checkpoint", str(ck), "--image", str(img), "--out", str(tmp_path / "c.mp4"), "--steps", "1",
                        "--device", "cpu"])
    assert (used[0].p_mean, used[0].p_std) == (-0.4, 0.9)
    assert info["diffusion"]["p_mean"] == -0.4 and info["weights"] == "ema"
    info = sample_main(["--checkpoint", str(ck), "--image", str(img), "--out", str(tmp_path / "d.mp4"), "--steps", "1",
                        "--device", "cpu", "--weights", "trainable"])
    assert info["weights"] == "trainable"


def test_force_upcast_vaes_stay_float32(tiny_experts):
    from train.experts import load_experts
    from train.jointdit import place_frozen

    _, _, frozen = load_experts(*tiny_experts)
    assert frozen.audio_vae.config.force_upcast and frozen.video_vae.config.force_upcast  # as the hub configs
    mel = torch.randn(1, 1, 200, 64)
    ref = frozen.encode_audio(mel, torch.Generator().manual_seed(0))
    place_frozen(frozen, "cpu", torch.bfloat16)
    assert frozen.audio_vae.dtype == frozen.video_vae.dtype == torch.float32
    assert frozen.image_encoder.dtype == frozen.vocoder.dtype == torch.bfloat16
    out = frozen.encode_audio(mel, torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and torch.equal(out, ref)  # the same float32 computation
    # a VAE without force_upcast takes the mixed-precision dtype; inputs are cast, outputs come back float32
    frozen.video_vae.register_to_config(force_upcast=False)
    place_frozen(frozen, "cpu", torch.bfloat16)
    assert frozen.video_vae.dtype == torch.bfloat16
    v = frozen.encode_video(torch.rand(1, 2, 3, 16, 16) * 2 - 1)
    wav = frozen.decode_audio(ref)
    assert v.dtype == wav.dtype == torch.float32


def test_new_options_have_help_and_bad_values_are_one_line_errors(tmp_path, capsys):
    from train.jointdit import cli

    with pytest.raises(SystemExit):
        cli(["--help"])
    text = capsys.readouterr().out
    for flag in ("--ema", "--no-ema", "--ema-decay", "--lr-scheduler", "--lr-warmup-steps",
                 "--gradient-accumulation-steps", "--log-sample-keys", "--resume"):
        assert flag in text, flag
    assert "setting `" not in text
    for bad, msg in [("lr_scheduler=step", "error: lr_scheduler='step': expected one of constant_with_warmup, constant, cosine, linear"),
                     ("gradient_accumulation_steps=0", "error: need gradient_accumulation_steps >= 1")]:
        assert cli(["--shards", str(tmp_path / "x.tar"), bad]) == 2
        assert capsys.readouterr().err.strip().startswith(msg)
    (tmp_path / "ck").mkdir()
    (tmp_path / "x.tar").write_bytes(b"")
    assert cli(["--shards", str(tmp_path / "x.tar"), "--resume", str(tmp_path / "ck")]) == 2
    assert "is not a checkpoint folder (no state.json)" in capsys.readouterr().err
