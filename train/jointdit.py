r"""Train JointDiT on curated shards (or cached latents).

    python -m train.jointdit --shards 'out/shards/*.tar' --preset tiny --steps 200
    accelerate launch -m train.jointdit --shards ... --preset paper \
        --video-model stabilityai/stable-video-diffusion-img2vid --audio-model cvssp/audioldm2 \
        --mixed-precision bf16 --gradient-checkpointing
    python -m train.jointdit --preset paper --dry-run --print-params   # meta device, no download
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch

log = logging.getLogger("train.jointdit")

PRESET_DEFAULTS = {
    "tiny": dict(height=32, width=32, batch_size=2, lr=1e-3, steps=200, num_workers=0),
    "paper": dict(height=256, width=256, batch_size=4, lr=1e-5, steps=100_000, num_workers=4),
}


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
    """AdamW learning rate (constant)."""
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
    mixed_precision: str = "no"
    """accelerate mixed precision: no, fp16 or bf16."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, more time)."""
    grad_clip: float = 1.0
    """Clip the gradient norm to this value (0: off)."""
    shuffle: int = 64
    """WebDataset shuffle buffer in samples (0: read in order)."""
    num_workers: int | None = None
    """DataLoader worker processes."""
    log_every: int = 10
    """Log loss and steps/s every N steps."""
    save_every: int = 1000
    """Write a checkpoint every N steps (and at the end)."""
    seed: int = 0
    """Random seed (each process adds its rank)."""
    resume: str | None = None
    """'latest' or a checkpoint folder."""
    progress: bool = True
    """Show a progress bar."""
    joint: dict = field(default_factory=dict)
    """Overrides of the JointDiT sizes (block_size, qk_dim, value_dim, heads, ff_mult)."""
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
        if f.type in ("bool",) or isinstance(f.default, bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text.replace("%", "%%"))
        else:
            typ = {"int": int, "float": float}.get(str(f.type).split(" |")[0], str)
            kw = dict(choices=list(PRESET_DEFAULTS)) if f.name == "preset" else {}
            if f.name == "mixed_precision":
                kw = dict(choices=["no", "fp16", "bf16"])
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


def added_time_ids(b: int, fps: float, motion_bucket_id: int, noise_aug: float, device) -> torch.Tensor:
    return torch.tensor([[fps - 1, motion_bucket_id, noise_aug]], device=device, dtype=torch.float32).repeat(b, 1)


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


def save_checkpoint(path: Path, model, optimizer, step: int, cfg: TrainConfig, experts: tuple[str, str]) -> None:
    """Trainable weights (safetensors) + JointDiT config + optimizer + state; experts by reference."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    names = set(model.trainable_parameter_names())
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k in names}
    save_file(sd, str(path / "jointdit_trainable.safetensors"))
    model.save_config(path)
    torch.save(optimizer.state_dict(), path / "optimizer.pt")
    from train.experts import is_random

    state = {"step": step, "video_model": experts[0], "audio_model": experts[1], "preset": cfg.preset,
             "random_weights": is_random(experts[0]) or is_random(experts[1]), "train_config": asdict(cfg)}
    (path / "state.json").write_text(json.dumps(state, indent=1))


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    cks = sorted(Path(out_dir).glob("checkpoint-*"))
    return cks[-1] if cks else None


def load_checkpoint(path: str | Path, dtype=torch.float32):
    """(JointDiT, FrozenParts, state) from a checkpoint folder written by `save_checkpoint`."""
    from safetensors.torch import load_file

    from train.experts import build_jointdit, load_experts
    from train.models.jointdit import JointDiT

    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    vunet, aunet, frozen = load_experts(state["video_model"], state["audio_model"])
    jcfg = JointDiT.load_config(path)
    model = JointDiT.from_experts(vunet, aunet, **JointDiT.options_from_config(jcfg))
    sd = load_file(str(path / "jointdit_trainable.safetensors"))
    missing = set(sd) - set(model.state_dict())
    if missing:
        raise KeyError(f"checkpoint has unknown parameters: {sorted(missing)[:5]}")
    model.load_state_dict(sd, strict=False)
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

    if args.dry_run or args.print_params:
        return
    if cfg.latents:
        resolve_files(cfg.latents, what="latent shards")
    elif cfg.shards:
        resolve_files(cfg.shards, what="shards")
    else:
        raise UsageError("give --shards PATTERN (curated WebDataset shards) or --latents PATTERN")
    output_dir(cfg.out_dir, what="--out-dir")
    if cfg.resume and cfg.resume != "latest" and not Path(cfg.resume).is_dir():
        raise UsageError(f"--resume {cfg.resume!r} is not a checkpoint folder")


def cli(argv=None) -> int:
    """`python -m train.jointdit`: user mistakes are one `error:` line and exit code 2."""
    from common.cli import run_main

    def body() -> int:
        r = main(argv)
        if isinstance(r, dict) and r.get("checkpoint"):
            print(f"saved to {r['checkpoint']}")
        return 0

    return run_main(body)


def main(argv=None) -> dict:
    cfg, args = parse_args(argv)
    from common.cli import settings_help, setup_logging

    setup_logging()
    if args.help_config:
        print(settings_help(TrainConfig))
        return {}
    check_inputs(cfg, args)
    if args.print_params or (args.dry_run and cfg.preset == "paper"):
        counts = print_params(cfg.preset)
        if args.dry_run:
            return {"params": counts}

    from accelerate import Accelerator
    from tqdm import tqdm

    from train.data import LatentClips, ShardClips, collate
    from train.diffusion import Condition, DiffusionConfig, JointDiffusion
    from train.experts import build_jointdit, is_random, load_experts

    acc = Accelerator(mixed_precision=cfg.mixed_precision)
    torch.manual_seed(cfg.seed + acc.process_index)
    experts = resolve_experts(cfg)
    random_weights = is_random(experts[0]) or is_random(experts[1])
    if random_weights and acc.is_main_process:
        log.warning("RANDOM-INIT expert weights (%s, %s): this run checks the pipeline, its outputs are noise", *experts)
    vunet, aunet, frozen = load_experts(*experts)
    options = dict(use_joint_blocks=cfg.use_joint_blocks, joint_attention=cfg.joint_attention, cmc_pe=cfg.cmc_pe)
    model = build_jointdit(vunet, aunet, frozen, cfg.preset, **{**options, **cfg.joint})
    model.set_trainable()
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    wdtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[cfg.mixed_precision]
    frozen.to(acc.device, dtype=wdtype if acc.device.type == "cuda" else torch.float32)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("JointDiT: %d joint blocks, %.2fM trainable / %.2fM params", model.num_joint_blocks, n_train / 1e6,
             sum(p.numel() for p in model.parameters()) / 1e6)
    if args.dry_run:
        return {"trainable": n_train}

    spec = spec_for(cfg)
    if cfg.latents:
        ds = LatentClips(cfg.latents, repeat=True, shuffle=bool(cfg.shuffle), seed=cfg.seed + acc.process_index)
    elif cfg.shards:
        ds = ShardClips(cfg.shards, spec, shuffle=cfg.shuffle, repeat=True, seed=cfg.seed + acc.process_index,
                        rank=acc.process_index, world_size=acc.num_processes)
    else:
        raise SystemExit("give --shards or --latents")
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, collate_fn=collate, num_workers=cfg.num_workers)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, opt = acc.prepare(model, opt)
    raw = acc.unwrap_model(model)
    step = 0
    if cfg.resume:
        ck = latest_checkpoint(cfg.out_dir) if cfg.resume == "latest" else Path(cfg.resume)
        if ck is not None:
            from safetensors.torch import load_file

            raw.load_state_dict(load_file(str(ck / "jointdit_trainable.safetensors")), strict=False)
            opt.load_state_dict(torch.load(ck / "optimizer.pt", map_location=acc.device))
            step = json.loads((ck / "state.json").read_text())["step"]
            log.info("resumed from %s at step %d", ck, step)
    diffusion = JointDiffusion(DiffusionConfig(p_mean=cfg.p_mean, p_std=cfg.p_std, lambda_video=cfg.lambda_video,
                                               lambda_audio=cfg.lambda_audio, timestep_gamma=cfg.timestep_gamma,
                                               independent_timesteps=cfg.independent_timesteps))
    gen = torch.Generator(device=acc.device).manual_seed(cfg.seed * 1000 + acc.process_index + step)
    history: list[dict] = []
    pbar = tqdm(total=cfg.steps, initial=step, disable=not (cfg.progress and acc.is_main_process), desc="jointdit")
    t0, last = time.time(), step
    data = iter(loader)
    model.train()
    while step < cfg.steps:
        batch = next(data)
        batch = {k: (v.to(acc.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        lat = batch if cfg.latents else encode_batch(frozen, batch, cfg, spec.fps, gen)
        b = lat["video_latents"].shape[0]
        cond = Condition(lat["image_latents"], lat["image_embeds"],
                         added_time_ids(b, spec.fps, cfg.motion_bucket_id, cfg.noise_aug, acc.device)).drop(cfg.cond_drop, gen)
        with acc.autocast():
            out = diffusion.training_losses(model, lat["video_latents"], lat["audio_latents"], cond, generator=gen)
        acc.backward(out["loss"])
        if cfg.grad_clip:
            acc.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        pbar.update(1)
        rec = {"step": step, "loss": out["loss"].item(), "video": out["video"].item(), "audio": out["audio"].item()}
        history.append(rec)
        if step % cfg.log_every == 0 or step == cfg.steps:
            dt = time.time() - t0
            rec["steps_per_s"] = (step - last) / max(dt, 1e-9)
            t0, last = time.time(), step
            if acc.is_main_process:
                log.info("step %d loss %.4f (video %.4f audio %.4f) %.2f steps/s", step, rec["loss"], rec["video"],
                         rec["audio"], rec["steps_per_s"])
        if acc.is_main_process and (step % cfg.save_every == 0 or step == cfg.steps):
            save_checkpoint(Path(cfg.out_dir) / f"checkpoint-{step:06d}", raw, opt, step, cfg, experts)
    pbar.close()
    acc.wait_for_everyone()
    return {"history": history, "checkpoint": str(latest_checkpoint(cfg.out_dir)), "random_weights": random_weights,
            "model": raw, "frozen": frozen}


if __name__ == "__main__":
    import sys

    sys.exit(cli())
