"""Train AVSyncD (AVSync15 paper Sec. 4.2 / 5.1) on curated shards: `python -m train.avsyncd --shards ...`.

One small linear loop: shards -> 2 s clips (12 frames at 6 fps) -> frozen VAE / CLIP text / ImageBind audio
encoders -> DDPM epsilon loss on frames 2..12 of the AVSyncD UNet (only its added layers train) -> Adam(W).
The loop is the project's training engine (train.engine; one device, `accelerate launch` or torchrun):
checkpoints every `save_every` steps (and on SIGTERM / SIGUSR1) hold the trainable weights, optimizer,
schedule and random states (resume with `resume=latest`), and the run ends with a complete UNet folder
(`final/unet`, diffusers `save_pretrained`) plus `final/avsyncd.json`, which the sampler reads.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from common import cli
from common.config import load, to_dict
from train.avsyncd_diffusion import DiffusionConfig

log = logging.getLogger("train.avsyncd")


@dataclass
class TrainConfig:
    preset: Literal["paper", "tiny"] = "paper"
    """paper: SD 1.5 + ImageBind huge from `sd` / `imagebind`; tiny: random toy parts (tests, seconds on CPU)."""
    shards: str = ""
    """Curation shards (glob / brace pattern, several separated by spaces)."""
    sd: str = "runwayml/stable-diffusion-v1-5"
    """Stable Diffusion 1.5: hub id or local folder (diffusers layout). Empty with preset=tiny: random toy parts."""
    imagebind: str = ".checkpoints/imagebind_huge.pth"
    """ImageBind checkpoint (path or URL), or an audio-encoder folder (the authors' modules/audio_encoder)."""
    init_unet: str = ""
    """Start from this AVSyncD UNet (our final/unet, or the authors' checkpoint modules folder) instead of SD's."""
    out_dir: str = "out/avsyncd"
    steps: int = 37000
    """Optimizer steps (the authors' released AVSync15 checkpoint is step 37000)."""
    batch_size: int = 64
    """Global batch (paper: 64), split over processes and gradient accumulation."""
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.01
    """AdamW weight decay (the authors' config: 1e-2; 0 gives the paper's plain Adam)."""
    max_grad_norm: float = 1.0
    mixed_precision: Literal["", "no", "fp16", "bf16"] = ""
    """"" (default): `accelerate launch --mixed_precision`, else bf16 on a GPU, no on the CPU."""
    gradient_checkpointing: bool = True
    """Recompute the UNet blocks' activations in the backward pass (they hold the trainable layers)."""
    lr_scheduler: str = "constant_with_warmup"
    """diffusers schedule: constant_with_warmup, constant, cosine or linear."""
    lr_warmup_steps: int = 0
    ema: bool = False
    """Keep an EMA of the trainable weights (ema.safetensors in each checkpoint; the paper uses none)."""
    ema_decay: float = 0.9999
    keep_last: int = 3
    """Checkpoints kept (the newest N; 0: all); milestones too."""
    milestone_every: int = 10000
    validate_every: int = 0
    """Every N steps: the loss of `validate_count` fixed clips at fixed noise (val/loss) and a sample from each
    into out_dir/samples/ (mp4 + wav) and the trackers (0: off)."""
    validate_count: int = 2
    trackers: str = "tensorboard"
    """Trackers through accelerate, comma-separated: tensorboard, wandb, none."""
    max_nonfinite: int = 20
    height: int = 256
    width: int = 256
    """Frame size (GreatestHits: height=128 width=256)."""
    fps: float = 6.0
    duration: float = 2.0
    hflip: bool = True
    """Random horizontal flip (the authors' randflip)."""
    random_window: bool = True
    """A random 2 s window of each segment (else its first 2 s)."""
    limit_clips: int = 0
    """Use only the first N segments (0: all), e.g. to check that a run can overfit."""
    shuffle: int = 1000
    """Shuffle buffer of the shard reader (0: read in order)."""
    num_workers: int = 2
    """DataLoader worker processes per process."""
    data_mode: str = "auto"
    """How readers (processes x workers) share the shards: exact, resampled or auto (resampled when there are
    fewer shards than readers); see docs/jointdit_design.md#data-modes."""
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    groupnorm_over_frames: bool = False
    """ResNet GroupNorms pool all frames of a clip (the authors' network). Off: per frame, as SD 1.5 was trained,
    so a fresh model is SD 1.5 on the conditioning frame; see docs/avsyncd.md. A loaded init_unet keeps its own."""
    added_init: Literal["identity", "asva"] = "identity"
    """identity: attn_audio / attn_temp outputs start at zero; asva: the authors' init (attn_temp weight only)."""
    imagebind_train_mode: bool = False
    """Encode audio with ImageBind in train mode (drop-path 0.1 on real and null audio), as the authors do."""
    seed: int = 0
    log_every: int = 50
    save_every: int = 1000
    resume: str | None = "latest"
    """'latest' (the newest checkpoint in out_dir, if any), a checkpoint folder, or null / '' (start fresh)."""
    progress: bool = True

    def __post_init__(self):  # a misspelt choice is a user error (one `error:` line, exit 2)
        from media.stream import DATA_MODES

        if self.data_mode not in DATA_MODES:
            raise ValueError(f"data_mode={self.data_mode!r}: expected one of {', '.join(DATA_MODES)}")


def parse_args(argv=None) -> tuple[TrainConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m train.avsyncd", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", help="curation shards, e.g. 'out/shards/train-*.tar'")
    p.add_argument("--preset", choices=["paper", "tiny"], help="model size (default paper)")
    p.add_argument("--out-dir", help="run folder (checkpoints, final/)")
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--print-params", action="store_true", help="print the paper-size parameter table (meta device) and exit")
    p.add_argument("--dry-run", action="store_true", help="print the settings, data plan and a per-GPU memory estimate, and exit")
    cli.add_config_arguments(p, example="lr=5e-5")
    a = p.parse_args(argv)
    if a.help_config:
        print(cli.settings_help(TrainConfig))
        raise SystemExit(0)
    cfg = load(TrainConfig, a.config, a.overrides, explicit={"shards": a.shards, "preset": a.preset,
                                                             "out_dir": a.out_dir, "steps": a.steps})
    return cfg, a


def checkpoints(out_dir: str | Path) -> list[Path]:
    from train.checkpointing import list_checkpoints

    return list_checkpoints(out_dir)


def resume_from(cfg: TrainConfig) -> Path | None:
    if not cfg.resume:
        return None
    if cfg.resume == "latest":
        cks = checkpoints(cfg.out_dir)
        return cks[-1] if cks else None
    p = Path(cfg.resume)
    if not (p / "unet_trainable.safetensors").is_file():
        raise cli.UsageError(f"resume={cfg.resume!r} is not a checkpoint folder (no unet_trainable.safetensors)")
    return p


def build_parts(cfg: TrainConfig):
    """The components; preset=tiny with sd='' writes random toy parts into out_dir/components once."""
    from train.avsyncd_components import load_components, write_tiny_components

    sd, imagebind = cfg.sd, cfg.imagebind
    if cfg.preset == "tiny" and not sd:
        comp = Path(cfg.out_dir) / "components"
        if not (comp / "random_weights.json").is_file():
            write_tiny_components(comp, seed=cfg.seed)
        sd, imagebind = str(comp), str(comp / "audio_encoder")
    return load_components(sd, imagebind, cfg.init_unet, imagebind_preset="huge" if cfg.preset == "paper" else "tiny",
                           groupnorm_over_frames=cfg.groupnorm_over_frames, added_init=cfg.added_init,
                           audio_train_mode=cfg.imagebind_train_mode)


def print_param_table() -> dict:
    from train.avsyncd_components import param_table

    rows = param_table("paper")
    for k, v in rows.items():
        print(f"{k:>20}  {v / 1e6:9.2f} M")
    return rows


def engine_settings(cfg: TrainConfig):
    from train.engine import EngineSettings

    return EngineSettings(
        out_dir=cfg.out_dir, steps=cfg.steps, lr=cfg.lr, weight_decay=cfg.weight_decay, lr_scheduler=cfg.lr_scheduler,
        lr_warmup_steps=cfg.lr_warmup_steps, grad_accum=cfg.grad_accum, grad_clip=cfg.max_grad_norm,
        mixed_precision=cfg.mixed_precision or None, ema=cfg.ema, ema_decay=cfg.ema_decay, save_every=cfg.save_every,
        keep_last=cfg.keep_last, milestone_every=cfg.milestone_every, log_every=cfg.log_every,
        validate_every=cfg.validate_every, max_nonfinite=cfg.max_nonfinite,
        trackers=tuple(t.strip() for t in cfg.trackers.split(",")), seed=cfg.seed, progress=cfg.progress, name="avsyncd")


RESUME_MAY_CHANGE = {"shards", "sd", "imagebind", "init_unet", "gradient_checkpointing", "milestone_every", "shuffle",
                     "limit_clips"}


def train(cfg: TrainConfig) -> dict:
    """The training run; returns the loss history, the final folder and the live model and parts."""
    urls = cli.resolve_files(cfg.shards, what="shards")
    world_batch = cfg.batch_size
    from train.avsyncd_data import AVSyncDClipSpec, AVSyncDClips, collate
    from train.avsyncd_diffusion import train_scheduler, training_loss
    from train.engine import Engine, ResumeMismatch
    from train.models.avsyncd import segment_audio_tokens

    eng = Engine(engine_settings(cfg), run_config=to_dict(cfg), may_change=RESUME_MAY_CHANGE)
    per = world_batch // (eng.world * cfg.grad_accum)
    if per < 1 or per * eng.world * cfg.grad_accum != world_batch:
        raise cli.UsageError(f"batch_size={world_batch} is not divisible by {eng.world} processes x "
                             f"grad_accum={cfg.grad_accum}")
    from media.stream import too_few_samples

    short = too_few_samples(urls, eng.world, cfg.num_workers, cfg.data_mode)
    if short:
        raise cli.UsageError(short)
    torch.manual_seed(cfg.seed + eng.rank)
    with eng.local_main_first():  # hub downloads / toy parts: once per node
        parts = build_parts(cfg)
    if parts.random_weights and eng.is_main:
        log.warning("RANDOM-INIT weights (%s): this run checks the pipeline; its samples are noise", parts.sources["sd"])
    unet = parts.unet
    unet.set_trainable()
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    parts.frozen_to(eng.device, eng.compute_dtype if eng.device.type == "cuda" else torch.float32)
    n_train = sum(p.numel() for p in unet.parameters() if p.requires_grad)
    log.info("AVSyncD UNet: %.2fM trainable / %.2fM params, precision %s", n_train / 1e6,
             sum(p.numel() for p in unet.parameters()) / 1e6, eng.precision)
    eng.setup(unet, weights=lambda raw: raw.trainable_state_dict(), weights_file="unet_trainable.safetensors")
    try:
        eng.resume(resume_from(cfg))
    except ResumeMismatch as e:
        raise cli.UsageError(str(e)) from None
    start = eng.step

    spec = AVSyncDClipSpec(duration=cfg.duration, fps=cfg.fps, height=cfg.height, width=cfg.width)
    ds = AVSyncDClips(urls, spec, shuffle=cfg.shuffle, repeat=True, seed=cfg.seed,
                      rank=eng.rank, world_size=eng.world, hflip=cfg.hflip,
                      random_window=cfg.random_window, limit=cfg.limit_clips,
                      mode=cfg.data_mode, num_workers=cfg.num_workers)
    loader = torch.utils.data.DataLoader(ds, batch_size=per, collate_fn=collate, num_workers=cfg.num_workers)
    scheduler = train_scheduler(cfg.diffusion)
    with torch.no_grad():
        null_mel = torch.zeros(1, 1, 128, spec.mel.mel_frames, device=eng.device)
        null_audio = segment_audio_tokens(parts.encode_audio(null_mel), spec.num_frames)

    def loss_fn(batch: dict, step: int) -> dict:
        gen = eng.gen
        with torch.no_grad():
            latents = parts.encode_frames(batch["video"].to(eng.device), gen)
            text = parts.encode_text(batch["label"]).float()
            audio = segment_audio_tokens(parts.encode_audio(batch["mel"].to(eng.device)), spec.num_frames)
            # ImageBind in train mode (the authors' way) draws its drop-path anew for the null audio every step too
            null = segment_audio_tokens(parts.encode_audio(null_mel), spec.num_frames) if cfg.imagebind_train_mode else null_audio
        with eng.autocast():
            out = training_loss(eng.model, latents, text, audio, null, scheduler, cfg.diffusion.null_audio_prob, gen)
        return {"loss": out["loss"]}

    validate = validation_fn(eng, parts, ds, spec, null_audio, cfg) if cfg.validate_every and eng.is_main else None
    r = eng.fit(iter(loader), loss_fn, validate)
    raw = eng.raw
    final = Path(cfg.out_dir) / "final"
    if eng.is_main and not r["interrupted"]:
        raw.save_pretrained(str(final / "unet"))
        (final / "avsyncd.json").write_text(json.dumps({
            "sd": parts.sources["sd"], "imagebind": parts.sources["imagebind"], "preset": cfg.preset,
            "random_weights": parts.random_weights, "step": eng.step, "height": cfg.height, "width": cfg.width,
            "fps": cfg.fps, "duration": cfg.duration, "diffusion": to_dict(cfg.diffusion)}, indent=1))
        print(f"saved to {final}")
    history = [h for h in r["history"] if h["step"] > start]
    return {"history": history, "final": str(final), "random_weights": parts.random_weights, "unet": raw,
            "parts": parts, "null_audio": null_audio, "spec": spec, "interrupted": r["interrupted"]}


def validation_fn(eng, parts, ds, spec, null_audio, cfg: TrainConfig):
    """Validation on the first `validate_count` clips (fixed): their loss at fixed noise and timesteps
    (val/loss), and a sample from each clip's first frame, audio and label (`diffusion.sample_steps` steps)
    written to out_dir/samples/step-N/valI.mp4 (with the conditioning audio) and .wav."""
    import numpy as np

    from media.encode import encode_mp4
    from train.avsyncd_data import collate
    from train.avsyncd_diffusion import sample, sample_scheduler, train_scheduler, training_loss
    from train.models.avsyncd import segment_audio_tokens

    clips = []
    for c in ds.iter_reader(0, 1):
        clips.append(c)
        if len(clips) >= cfg.validate_count:
            break
    batch = collate(clips)
    scheduler = train_scheduler(cfg.diffusion)

    def validate(step: int) -> dict:
        import soundfile as sf

        g = torch.Generator(device=eng.device).manual_seed(1234)
        latents = parts.encode_frames(batch["video"].to(eng.device), g)
        text = parts.encode_text(batch["label"]).float()
        audio = segment_audio_tokens(parts.encode_audio(batch["mel"].to(eng.device)), spec.num_frames)
        out = training_loss(eng.raw, latents, text, audio, null_audio, scheduler, 0.0, g)
        lat = sample(eng.raw, latents[:, 0], text, audio, null_audio, sample_scheduler(cfg.diffusion), spec.num_frames,
                     cfg.diffusion.sample_steps, cfg.diffusion.guidance, g)
        frames = (parts.decode_latents(lat).permute(0, 1, 3, 4, 2).cpu().numpy() * 255).round().astype(np.uint8)
        folder = Path(cfg.out_dir) / "samples" / f"step-{step:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        files, audio_out, imgs = [], {}, {}
        for i in range(frames.shape[0]):
            wave = batch["wave"][i].numpy().astype(np.float32)
            (folder / f"val{i}.mp4").write_bytes(encode_mp4(frames[i], spec.fps, wave, spec.audio_rate))
            sf.write(folder / f"val{i}.wav", wave, spec.audio_rate)
            files += [folder / f"val{i}.mp4", folder / f"val{i}.wav"]
            audio_out[f"val{i}"] = (wave, spec.audio_rate)
            imgs[f"val{i}"] = np.concatenate(list(frames[i][:: max(1, frames.shape[1] // 4)]), axis=1)
        return {"metrics": {"loss": float(out["loss"])}, "files": files, "audio": audio_out, "images": imgs}

    return validate


def dry_run(cfg: TrainConfig) -> dict:
    """Resolved settings, data plan and a per-GPU memory estimate (UNet on the meta device; the frozen VAE,
    CLIP text and ImageBind encoders are not included)."""
    import os

    from train.memory import estimate, format_estimate, measured_activations, planned_precision
    from train.models.avsyncd import PRESETS, build_unet

    world = int(os.environ.get("WORLD_SIZE", "1"))
    precision = planned_precision(cfg.mixed_precision)
    per = max(1, cfg.batch_size // (world * cfg.grad_accum))
    print("settings:", json.dumps(to_dict(cfg), default=str))
    print(f"processes {world}, precision {precision}, {per} clip(s) per process and micro-batch, gradient "
          f"checkpointing {cfg.gradient_checkpointing}")
    if cfg.shards:
        from media.stream import data_plan

        cli.resolve_files(cfg.shards, what="shards")
        print("data plan:", json.dumps(data_plan(cfg.shards, world, max(1, cfg.num_workers), cfg.data_mode)))
    unet = build_unet(cfg.preset, device="meta")
    unet.to("meta")
    unet.set_trainable()
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    f = round(cfg.duration * cfg.fps)
    p = PRESETS[cfg.preset]
    dev = torch.device("meta")

    def step():
        x = torch.zeros(per, f, 4, cfg.height // 8, cfg.width // 8, device=dev)
        text = torch.zeros(per, 77, p["cross_attention_dim"], device=dev)
        audio = torch.zeros(per, f, 1 + 12 * 2, p["audio_cross_attention_dim"], device=dev)
        return unet(x, torch.zeros(per, dtype=torch.long, device=dev), text, audio).sample.mean()

    act = measured_activations(step)
    est = estimate(unet, precision, cfg.ema, act)
    print(f"memory per GPU (UNet only; batch {per}, {precision}):")
    print(format_estimate(est))
    return {"memory": est}


def main(argv=None) -> int:
    """Command line: exit code 0, or 2 with one `error: ...` line for a user mistake."""
    def body():
        cfg, args = parse_args(argv)
        cli.setup_logging()
        if args.print_params:
            print_param_table()
            return 0
        if args.dry_run:
            dry_run(cfg)
            return 0
        train(cfg)
        return 0

    return cli.run_main(body)


if __name__ == "__main__":
    raise SystemExit(main())
