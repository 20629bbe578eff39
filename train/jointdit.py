r"""Train JointDiT on curated shards (or cached latents), on one process or many (accelerate / torchrun).

    python -m train.jointdit --shards 'out/shards/*.tar' --preset tiny --steps 200
    accelerate launch -m train.jointdit --shards ... --preset paper \
        --video-model stabilityai/stable-video-diffusion-img2vid --audio-model cvssp/audioldm2 \
        --mixed-precision bf16 --gradient-checkpointing
    torchrun --nproc_per_node 8 -m train.jointdit --config my.yaml --resume latest
    python -m train.jointdit --preset paper --dry-run   # settings, data plan, per-GPU memory (meta device)

Every process reads its own part of the shards (each DataLoader worker its own part of that). The loop is
the shared training engine (train.engine): EMA, warm-up + schedule, accumulation, NaN guard, trackers,
validation samples, checkpoints with retention, also on SIGTERM / SIGUSR1, and a strict `--resume`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from train.checkpointing import latest_checkpoint  # noqa: F401  (the sampler and tests use it from here)
from train.engine import EMA  # noqa: F401  (bench)
from train.diffusion import added_time_ids

log = logging.getLogger("train.jointdit")

PRESET_DEFAULTS = {
    "tiny": dict(height=32, width=32, batch_size=2, lr=1e-3, steps=200, num_workers=0, lr_warmup_steps=0),
    "paper": dict(height=256, width=256, batch_size=4, lr=1e-5, steps=100_000, num_workers=4, lr_warmup_steps=1000),
}
LR_SCHEDULERS = ("constant_with_warmup", "constant", "cosine", "linear")


@dataclass
class TrainConfig:
    shards: str | None = None
    """Curated WebDataset shards (glob / brace pattern)."""
    latents: str | None = None
    """Latent shards from `python -m train.cache_latents` (replaces --shards: no VAE/CLIP per step)."""
    preset: str = "tiny"
    """Expert sizes: tiny (random-init stand-ins, CPU) or paper (SVD + AudioLDM2)."""
    video_model: str | None = None
    """SVD img2vid in diffusers format (hub id or path); tiny preset: random-init stand-in if unset."""
    audio_model: str | None = None
    """AudioLDM2 in diffusers format (hub id or path); tiny preset: random-init stand-in if unset."""
    out_dir: str = "out/jointdit"
    """Run folder: checkpoint-NNNNNN/ folders are written here."""
    steps: int | None = None
    """Training steps (optimizer updates)."""
    batch_size: int | None = None
    """Clips per step and process."""
    lr: float | None = None
    """AdamW peak learning rate (reached after the warm-up; see --lr-scheduler)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    height: int | None = None
    """Frame height in pixels (the paper: 256)."""
    width: int | None = None
    """Frame width in pixels (the paper: 256)."""
    lambda_video: float = 1.0
    """Weight of the video loss (lambda1)."""
    lambda_audio: float = 1.0
    """Weight of the audio loss (lambda2)."""
    p_mean: float = 0.7
    """EDM log-sigma mean of the video noise levels (SVD's value; the paper does not give it)."""
    p_std: float = 1.6
    """EDM log-sigma spread of the video noise levels (SVD's value)."""
    cond_drop: float = 0.1
    """Probability of dropping the image condition in training (for guidance; the paper: 10 %)."""
    noise_aug: float = 0.02
    """Noise added to the conditioning image latent (SVD's noise augmentation)."""
    motion_bucket_id: int = 127
    """SVD motion bucket id passed as an added time id."""
    mixed_precision: str | None = None
    """no, fp16 or bf16; unset: `accelerate launch --mixed_precision`, else bf16 on a GPU, no on the CPU."""
    gradient_checkpointing: bool | None = None
    """Recompute activations of the experts' blocks (incl. SVD's trainable temporal blocks) in the backward
    pass (less memory, ~30 % more time); unset: on for the paper preset."""
    grad_clip: float = 1.0
    """Clip the gradient norm to this value (0: off)."""
    shuffle: int = 64
    """Shuffle: shard order per epoch plus a buffer of this many samples per reader (0: read in order)."""
    num_workers: int | None = None
    """DataLoader worker processes."""
    data_mode: str = "auto"
    """How readers (processes x workers) share the shards: exact (every sample once per data epoch), resampled
    (each reader draws shards with replacement; for many nodes or few shards), auto (resampled when there are
    fewer shards than readers, with a warning; else exact). See docs/jointdit_design.md#data-modes."""
    log_every: int = 10
    """Log loss and steps/s every N steps."""
    save_every: int = 1000
    """Write a checkpoint every N steps (and at the end, and on SIGTERM / SIGUSR1)."""
    keep_last: int = 3
    """Keep the newest N checkpoints (0: all); milestones are kept too."""
    milestone_every: int = 10000
    """Checkpoints at multiples of this step are never pruned (0: none)."""
    validate_every: int = 0
    """Every N steps sample the fixed validation conditions (first frames of the first clips) into
    out_dir/samples/ (mp4 + wav) and the trackers (0: off)."""
    validate_steps: int = 25
    """Sampling steps of the validation samples."""
    validate_count: int = 2
    """Validation conditions (first frames of the first clips)."""
    trackers: str = "tensorboard"
    """Trackers through accelerate, comma-separated: tensorboard, wandb, none."""
    max_nonfinite: int = 20
    """Stop with an error after this many updates skipped for a NaN/inf gradient."""
    seed: int = 0
    """Random seed (each process adds its rank)."""
    resume: str | None = None
    """'latest' (the newest checkpoint in --out-dir; none: start fresh) or a checkpoint folder: restores weights,
    optimizer, schedule, EMA, random states and the data position."""
    progress: bool = True
    """Show a progress bar."""
    joint: dict = field(default_factory=dict)
    """Overrides of the JointDiT sizes (block_size, qk_dim, value_dim, heads, ff_mult)."""
    # training at scale (the paper gives none of these: the values are the project's choice)
    ema: bool = True
    """Keep an exponential moving average of the trainable weights (ema.safetensors; the sampler uses it)."""
    ema_decay: float = 0.9999
    """EMA decay (project's choice; the paper gives none); update n uses min(decay, (1 + n) / (10 + n))."""
    lr_scheduler: str = "constant_with_warmup"
    """Learning-rate schedule (diffusers get_scheduler), in optimizer updates: constant_with_warmup, constant,
    cosine or linear (cosine and linear decay to 0 at --steps)."""
    lr_warmup_steps: int | None = None
    """Linear warm-up from 0 to --lr over this many optimizer updates (project's choice: paper preset 1000)."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer update (accelerate's accumulation); effective batch = batch_size x this x processes."""
    log_sample_keys: str | None = None
    """Debug: folder where every process and DataLoader worker appends the keys it reads (keys-rank{r}-worker{w}.jsonl)."""
    use_joint_blocks: bool = True
    """Joint blocks' own layers (joint attention, FF, AdaLN); off = the paper's "w/o Joint Block" ablation."""
    joint_attention: Literal["perceiver", "vanilla"] = "perceiver"
    """Joint attention: perceiver (the paper) or vanilla self-attention (the "w/o Perceiver attn" ablation)."""
    cmc_pe: bool = False
    """Add CMC-PE (Hayakawa et al.'s cross-modal conditioning as positional encoding) in each Joint block."""
    timestep_gamma: float = 1.0
    """Timestep adjustment gamma (Hayakawa et al.; 1.0 = off, they use 1.5); the sampler reuses it."""
    independent_timesteps: bool = False
    """Draw the video and audio timesteps independently in training (Hayakawa et al.), for any gamma later."""

    def __post_init__(self):  # contradicting options are user errors (one `error:` line, exit 2)
        if self.cmc_pe and not self.use_joint_blocks:
            raise ValueError("cmc_pe=true needs use_joint_blocks=true (CMC-PE feeds the joint attention)")
        if not self.timestep_gamma > 0:
            raise ValueError(f"timestep_gamma must be > 0, got {self.timestep_gamma}")
        from media.stream import DATA_MODES

        if self.data_mode not in DATA_MODES:
            raise ValueError(f"data_mode={self.data_mode!r}: expected one of {', '.join(DATA_MODES)}")

    def resolved(self) -> "TrainConfig":
        d = PRESET_DEFAULTS[self.preset]
        return dataclasses.replace(self, **{k: v for k, v in d.items() if getattr(self, k) is None})


def parse_args(argv=None) -> tuple[TrainConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m train.jointdit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    from common.cli import add_config_arguments
    from common.config import field_docs, load

    p.add_argument("--dry-run", action="store_true", help="build the model (meta device for paper) and exit")
    p.add_argument("--print-params", action="store_true", help="print parameter counts beside the paper's table")
    docs = field_docs(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "joint":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = PRESET_DEFAULTS["tiny"].get(f.name, f.default) if f.default is None else f.default
        text = docs.get(f.name, f"setting `{f.name}`")
        text = f"{text} (default: {'per preset' if f.name in PRESET_DEFAULTS['tiny'] else default})"
        if str(f.type).startswith("bool") or isinstance(f.default, bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text.replace("%", "%%"))
        else:
            typ = {"int": int, "float": float}.get(str(f.type).split(" |")[0], str)
            kw = dict(choices=list(PRESET_DEFAULTS)) if f.name == "preset" else {}
            if f.name == "mixed_precision":
                kw = dict(choices=["no", "fp16", "bf16"])
            if f.name == "lr_scheduler":
                kw = dict(choices=list(LR_SCHEDULERS))
            p.add_argument(flag, dest=f.name, type=typ, default=None, help=text.replace("%", "%%"), **kw)
    add_config_arguments(p, example="lr=1e-4 joint.heads=8")
    a = p.parse_args(argv)
    explicit = {f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig) if f.name != "joint"}
    cfg = load(TrainConfig, a.config, a.overrides, explicit=explicit)
    if cfg.preset not in PRESET_DEFAULTS:
        from common.config import ConfigError

        raise ConfigError(f"preset={cfg.preset!r}: expected one of {', '.join(PRESET_DEFAULTS)}")
    return cfg.resolved(), a


# ----------------------------------------------------------------------------------------- helpers


def spec_for(cfg: TrainConfig):
    from train.data import ClipSpec

    return ClipSpec(height=cfg.height, width=cfg.width)


def resolve_experts(cfg: TrainConfig) -> tuple[str, str]:
    from train.experts import write_tiny_experts

    if cfg.video_model and cfg.audio_model:
        return cfg.video_model, cfg.audio_model
    if cfg.preset != "tiny":
        raise SystemExit("--preset paper needs --video-model and --audio-model (hub ids or local diffusers folders)")
    v, a = write_tiny_experts(Path(cfg.out_dir) / "experts", seed=cfg.seed)
    return cfg.video_model or v, cfg.audio_model or a


def encode_batch(frozen, batch: dict, cfg: TrainConfig, fps: float, generator=None) -> dict:
    """Clip tensors -> latents and condition (the work `train.cache_latents` does once)."""
    video = batch["video"]
    first = video[:, 0]
    return {
        "video_latents": frozen.encode_video(video, generator),
        "image_latents": frozen.encode_image(first, cfg.noise_aug, generator),
        "image_embeds": frozen.clip_embed(first),
        "audio_latents": frozen.encode_audio(batch["mel"], generator),
    }


def place_frozen(frozen, device, dtype=torch.float32):
    """The frozen encoders/decoders on `device` in `dtype`, except a VAE whose config says `force_upcast`
    (SVD's and AudioLDM2's: they overflow in fp16), which stays float32. FrozenParts casts every input to the
    module's own dtype and returns float32, so mixed dtypes need nothing else."""
    frozen.to(device)
    for name in ("video_vae", "audio_vae", "image_encoder", "vocoder"):
        m = getattr(frozen, name)
        upcast = name.endswith("_vae") and bool(getattr(m.config, "force_upcast", False))
        m.to(dtype=torch.float32 if upcast else dtype)
    return frozen


def diffusion_config(cfg: TrainConfig):
    """The training objective's settings (saved with every checkpoint; the sampler uses the saved ones)."""
    from train.diffusion import DiffusionConfig

    return DiffusionConfig(p_mean=cfg.p_mean, p_std=cfg.p_std, lambda_video=cfg.lambda_video, lambda_audio=cfg.lambda_audio,
                           timestep_gamma=cfg.timestep_gamma, independent_timesteps=cfg.independent_timesteps)


def checkpoint_diffusion(state: dict):
    """The DiffusionConfig a checkpoint was trained with (older checkpoints: from their train_config)."""
    from train.diffusion import DiffusionConfig

    known = {f.name for f in dataclasses.fields(DiffusionConfig)}
    saved = state.get("diffusion_config")
    if saved is None:
        tc = state.get("train_config", {})
        saved = {k: tc[k] for k in ("p_mean", "p_std", "lambda_video", "lambda_audio") if k in tc}
    return DiffusionConfig(**{k: v for k, v in saved.items() if k in known})


def load_checkpoint(path: str | Path, dtype=torch.float32, ema: bool = True):
    """(JointDiT, FrozenParts, state) from a checkpoint folder written by the training engine; with `ema` the
    EMA weights when the checkpoint has them (state['weights'] says which were loaded)."""
    from safetensors.torch import load_file

    from train.experts import load_experts
    from train.models.jointdit import JointDiT

    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    vunet, aunet, frozen = load_experts(state["video_model"], state["audio_model"])
    jcfg = JointDiT.load_config(path)
    model = JointDiT.from_experts(vunet, aunet, **JointDiT.options_from_config(jcfg))
    use_ema = ema and (path / "ema.safetensors").exists()
    sd = load_file(str(path / ("ema.safetensors" if use_ema else "jointdit_trainable.safetensors")))
    from train.engine import weight_mismatch

    names = set(model.trainable_parameter_names())
    want = {k: v for k, v in model.state_dict().items() if k in names}
    bad = weight_mismatch(sd, want)
    if bad:
        raise KeyError(f"{path}: its weights do not fit the model its config.json describes: {'; '.join(bad)}")
    with torch.no_grad():
        for k, v in sd.items():
            want[k].copy_(v)
    state["weights"] = "ema" if use_ema else "trainable"
    return (model if dtype == torch.float32 else model.to(dtype)), frozen, state


# -------------------------------------------------------------------------------------------- main


def print_params(preset: str) -> dict:
    from train.experts import format_table, meta_parameter_table

    counts = meta_parameter_table(preset)
    print(f"JointDiT parameter counts ({preset} preset, meta device, no weights loaded)")
    print(format_table(counts))
    return counts


def check_inputs(cfg: TrainConfig, args) -> None:
    """User mistakes found before any model is built or anything is written (UsageError: exit 2)."""
    from common.cli import UsageError, output_dir, resolve_files

    if cfg.lr_scheduler not in LR_SCHEDULERS:
        raise UsageError(f"lr_scheduler={cfg.lr_scheduler!r}: expected one of {', '.join(LR_SCHEDULERS)}")
    if cfg.gradient_accumulation_steps < 1 or cfg.lr_warmup_steps < 0 or not 0.0 <= cfg.ema_decay < 1.0:
        raise UsageError("need gradient_accumulation_steps >= 1, lr_warmup_steps >= 0 and 0 <= ema_decay < 1")
    if args.dry_run or args.print_params:
        return
    if cfg.latents:
        resolve_files(cfg.latents, what="latent shards")
    elif cfg.shards:
        resolve_files(cfg.shards, what="shards")
    else:
        raise UsageError("give --shards PATTERN (curated WebDataset shards) or --latents PATTERN")
    from media.stream import too_few_samples

    why = too_few_samples(cfg.latents or cfg.shards, int(os.environ.get("WORLD_SIZE", "1")), cfg.num_workers, cfg.data_mode)
    if why:
        raise UsageError(why)
    output_dir(cfg.out_dir, what="--out-dir")
    if cfg.resume and cfg.resume != "latest" and not (Path(cfg.resume) / "state.json").is_file():
        raise UsageError(f"--resume {cfg.resume!r} is not a checkpoint folder (no state.json)")


def cli(argv=None) -> int:
    """`python -m train.jointdit`: user mistakes are one `error:` line and exit code 2."""
    from common.cli import run_main

    def body() -> int:
        r = main(argv)
        if isinstance(r, dict) and r.get("checkpoint") and r.get("main_process", True):
            print(f"saved to {r['checkpoint']}")
        return 0

    return run_main(body)


def engine_settings(cfg: TrainConfig):
    from train.engine import EngineSettings

    return EngineSettings(
        out_dir=cfg.out_dir, steps=cfg.steps, lr=cfg.lr, weight_decay=cfg.weight_decay, lr_scheduler=cfg.lr_scheduler,
        lr_warmup_steps=cfg.lr_warmup_steps, grad_accum=cfg.gradient_accumulation_steps, grad_clip=cfg.grad_clip,
        mixed_precision=cfg.mixed_precision, ema=cfg.ema, ema_decay=cfg.ema_decay, save_every=cfg.save_every,
        keep_last=cfg.keep_last, milestone_every=cfg.milestone_every, log_every=cfg.log_every,
        validate_every=cfg.validate_every, max_nonfinite=cfg.max_nonfinite,
        trackers=tuple(t.strip() for t in cfg.trackers.split(",")), seed=cfg.seed, progress=cfg.progress, name="jointdit")


# settings that may differ on resume (the rest must match the checkpoint's)
RESUME_MAY_CHANGE = {"shards", "latents", "video_model", "audio_model", "log_sample_keys", "gradient_checkpointing",
                     "milestone_every", "validate_steps", "validate_count", "shuffle"}


def dry_run(cfg: TrainConfig, eng=None) -> dict:
    """Resolved settings, data plan and a per-GPU memory estimate (meta device for the paper preset)."""
    from train.data import ClipSpec
    from train.memory import estimate, format_estimate, measured_activations, planned_precision

    world = int(os.environ.get("WORLD_SIZE", "1"))
    precision = planned_precision(cfg.mixed_precision)
    print("settings:", json.dumps(asdict(cfg), default=str))
    print(f"processes {world}, precision {precision}, gradient checkpointing {cfg.gradient_checkpointing}, "
          f"clips per update {cfg.batch_size * cfg.gradient_accumulation_steps * world}")
    src = cfg.latents or cfg.shards
    if src:
        from common.cli import resolve_files

        from media.stream import data_plan

        resolve_files(src, what="shards")
        print("data plan:", json.dumps(data_plan(src, world, max(1, cfg.num_workers), cfg.data_mode)))
    else:
        print("data: no --shards / --latents given")
    from train.diffusion import Condition, JointDiffusion
    from train.experts import FrozenParts, audio_unet_self_attention_only_meta, build_from_configs, build_jointdit

    with torch.device("meta"):
        m = build_from_configs(cfg.preset)
        frozen = FrozenParts(m["svd_vae"], m["clip_vision"], m["audioldm2_vae"], m["audioldm2_vocoder"])
        model = build_jointdit(m["svd_unet"], audio_unet_self_attention_only_meta(m["audioldm2_unet"]), frozen,
                               cfg.preset, use_joint_blocks=cfg.use_joint_blocks, joint_attention=cfg.joint_attention,
                               cmc_pe=cfg.cmc_pe, **cfg.joint)
    model.to("meta")  # a few parameters (torch.Tensor([...]) in diffusers' blenders) ignore the device context
    model.set_trainable()
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    spec = ClipSpec(height=cfg.height, width=cfg.width)
    b, dev = cfg.batch_size, torch.device("meta")
    vf = 2 ** (len(frozen.video_vae.config.block_out_channels) - 1)
    af = 2 ** (len(frozen.audio_vae.config.block_out_channels) - 1)
    v0 = torch.zeros(b, spec.num_frames, frozen.video_vae.config.latent_channels, cfg.height // vf, cfg.width // vf, device=dev)
    a0 = torch.zeros(b, model.audio_unet.config.in_channels, spec.mel_frames // af, spec.n_mels // af, device=dev)
    cond = Condition(torch.zeros(b, v0.shape[2], v0.shape[3], v0.shape[4], device=dev),
                     torch.zeros(b, 1, frozen.clip_dim, device=dev), added_time_ids(b, spec.fps, 127, 0.02, dev))
    diffusion = JointDiffusion(diffusion_config(cfg))
    model.train()
    act = measured_activations(lambda: diffusion.training_losses(
        model, v0, a0, cond, t_uni=torch.full((b,), 0.5, device=dev), noise_v=torch.zeros_like(v0),
        noise_a=torch.zeros_like(a0)))
    est = estimate(model, precision, cfg.ema, act)
    fz = sum(p.numel() for mod in (frozen.video_vae, frozen.image_encoder, frozen.audio_vae, frozen.vocoder)
             for p in mod.parameters()) * (2 if precision in ("bf16", "fp16") else 4) / 1024 ** 3
    print(f"memory per GPU (batch {b}, {precision}, gradient checkpointing {bool(cfg.gradient_checkpointing)}, "
          f"{est['trainable_params'] / 1e6:.1f}M trainable / {est['frozen_params'] / 1e6:.1f}M frozen in JointDiT):")
    print(format_estimate(est, extra_frozen_gib=fz))
    return {"memory": est, "frozen_gib": fz}


def validation_fn(eng, frozen, images: torch.Tensor, cfg: TrainConfig, spec, diffusion_cfg):
    """Sample the fixed validation conditions with the live weights: mp4 + wav in out_dir/samples/."""
    from media.encode import encode_mp4
    from train.diffusion import generate

    def validate(step: int) -> dict:
        import soundfile as sf

        frames, wav = generate(eng.raw, frozen, images, spec, steps=cfg.validate_steps, seed=cfg.seed,
                               motion_bucket_id=cfg.motion_bucket_id, noise_aug=cfg.noise_aug, diffusion=diffusion_cfg)
        folder = Path(cfg.out_dir) / "samples" / f"step-{step:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        files, audio, imgs = [], {}, {}
        for i in range(frames.shape[0]):
            w = np.clip(wav[i], -1, 1)
            (folder / f"val{i}.mp4").write_bytes(encode_mp4(frames[i], spec.fps, w, spec.audio_rate))
            sf.write(folder / f"val{i}.wav", w, spec.audio_rate)
            files += [folder / f"val{i}.mp4", folder / f"val{i}.wav"]
            audio[f"val{i}"] = (w, spec.audio_rate)
            imgs[f"val{i}"] = np.concatenate(list(frames[i][:: max(1, frames.shape[1] // 4)]), axis=1)
        return {"files": files, "audio": audio, "images": imgs, "metrics": {}}

    return validate


def main(argv=None) -> dict:
    cfg, args = parse_args(argv)
    from common.cli import settings_help, setup_logging

    setup_logging()
    if args.help_config:
        print(settings_help(TrainConfig))
        return {}
    if cfg.gradient_checkpointing is None:
        cfg = dataclasses.replace(cfg, gradient_checkpointing=cfg.preset == "paper")
    check_inputs(cfg, args)
    if args.print_params:
        counts = print_params(cfg.preset)
        if not args.dry_run:
            return {"params": counts}
    if args.dry_run:
        return dry_run(cfg)

    from train.data import LatentClips, ShardClips, collate
    from train.diffusion import Condition, JointDiffusion
    from train.engine import Engine, ResumeMismatch
    from train.experts import build_jointdit, is_random, load_experts

    from common.cli import UsageError

    eng = Engine(engine_settings(cfg), run_config=asdict(cfg), may_change=RESUME_MAY_CHANGE)
    rank = eng.rank
    random.seed(cfg.seed + rank)
    np.random.seed(cfg.seed + rank)
    torch.manual_seed(cfg.seed + rank)
    with eng.local_main_first():  # hub downloads / tiny stand-ins: once per node, the others read that copy
        experts = resolve_experts(cfg)
        vunet, aunet, frozen = load_experts(*experts)
    random_weights = is_random(experts[0]) or is_random(experts[1])
    if random_weights and eng.is_main:
        log.warning("RANDOM-INIT expert weights (%s, %s): this run checks the pipeline, its outputs are noise", *experts)
    options = dict(use_joint_blocks=cfg.use_joint_blocks, joint_attention=cfg.joint_attention, cmc_pe=cfg.cmc_pe)
    model = build_jointdit(vunet, aunet, frozen, cfg.preset, **{**options, **cfg.joint})
    model.set_trainable()
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    place_frozen(frozen, eng.device, eng.compute_dtype if eng.device.type == "cuda" else torch.float32)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if eng.is_main:
        log.info("JointDiT: %d joint blocks, %.2fM trainable / %.2fM params; %d process(es) x %d DataLoader workers, "
                 "%d clips per update, precision %s", model.num_joint_blocks, n_train / 1e6,
                 sum(p.numel() for p in model.parameters()) / 1e6, eng.world, cfg.num_workers,
                 cfg.batch_size * cfg.gradient_accumulation_steps * eng.world, eng.precision)
    names = set(model.trainable_parameter_names())
    eng.setup(model, weights=lambda raw: {k: v for k, v in raw.state_dict().items() if k in names},
              weights_file="jointdit_trainable.safetensors", save_extra=lambda d: eng.raw.save_config(d))
    diffusion = JointDiffusion(diffusion_config(cfg))
    eng.extra_state = {"video_model": experts[0], "audio_model": experts[1], "preset": cfg.preset,
                       "random_weights": random_weights, "train_config": asdict(cfg),
                       "diffusion_config": asdict(diffusion.cfg),
                       "data_layout": [eng.world, cfg.num_workers, cfg.batch_size]}
    try:
        eng.resume(eng.find_checkpoint(cfg.resume))
    except ResumeMismatch as e:
        raise UsageError(str(e)) from None

    spec = spec_for(cfg)
    data_kw = dict(shuffle=cfg.shuffle, repeat=True, seed=cfg.seed, rank=rank, world_size=eng.world,
                   batch_size=cfg.batch_size, start_batches=eng.consumed, log_dir=cfg.log_sample_keys,
                   mode=cfg.data_mode, num_workers=cfg.num_workers)
    ds = LatentClips(cfg.latents, **data_kw) if cfg.latents else ShardClips(cfg.shards, spec, **data_kw)
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, collate_fn=collate, num_workers=cfg.num_workers)
    data = iter(loader)
    validate = None
    if cfg.validate_every:
        if cfg.latents:
            log.warning("validate_every: latent shards hold no images to condition on; validation sampling is off")
        else:  # the fixed conditions: first frames of the first clips of a separate, unshuffled reader
            first = next(iter(ShardClips(cfg.shards, spec, shuffle=0, repeat=False)))
            imgs = [first["video"][0]]
            for clip in ShardClips(cfg.shards, spec, shuffle=0, repeat=False):
                if len(imgs) >= cfg.validate_count:
                    break
                if clip is not first:
                    imgs.append(clip["video"][0])
            validate = validation_fn(eng, frozen, torch.stack(imgs[:cfg.validate_count]), cfg, spec, diffusion.cfg)

    def loss_fn(batch: dict, step: int) -> dict:
        gen = eng.gen
        batch = {k: (v.to(eng.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        lat = batch if cfg.latents else encode_batch(frozen, batch, cfg, spec.fps, gen)
        b = lat["video_latents"].shape[0]
        cond = Condition(lat["image_latents"], lat["image_embeds"],
                         added_time_ids(b, spec.fps, cfg.motion_bucket_id, cfg.noise_aug, eng.device)).drop(cfg.cond_drop, gen)
        with eng.autocast():
            return diffusion.training_losses(eng.model, lat["video_latents"], lat["audio_latents"], cond, generator=gen)

    r = eng.fit(data, loss_fn, validate)
    return {**r, "random_weights": random_weights, "model": eng.raw, "frozen": frozen, "ema": eng.ema,
            "main_process": eng.is_main}


if __name__ == "__main__":
    import sys

    sys.exit(cli())
