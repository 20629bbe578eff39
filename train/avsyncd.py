"""Train AVSyncD (AVSync15 paper Sec. 4.2 / 5.1) on curated shards: `python -m train.avsyncd --shards ...`.

One small linear loop: shards -> 2 s clips (12 frames at 6 fps) -> frozen VAE / CLIP text / ImageBind audio
encoders -> DDPM epsilon loss on frames 2..12 of the AVSyncD UNet (only its added layers train) -> Adam(W).
Runs on one device or under `accelerate launch`; checkpoints every `save_every` steps hold the trainable
weights and the optimizer (resume with `resume=latest`), and the run ends with a complete UNet folder
(`final/unet`, diffusers `save_pretrained`) plus `final/avsyncd.json`, which the sampler reads.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
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
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
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


def parse_args(argv=None) -> tuple[TrainConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m train.avsyncd", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", help="curation shards, e.g. 'out/shards/train-*.tar'")
    p.add_argument("--preset", choices=["paper", "tiny"], help="model size (default paper)")
    p.add_argument("--out-dir", help="run folder (checkpoints, final/)")
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--print-params", action="store_true", help="print the paper-size parameter table (meta device) and exit")
    cli.add_config_arguments(p, example="lr=5e-5")
    a = p.parse_args(argv)
    if a.help_config:
        print(cli.settings_help(TrainConfig))
        raise SystemExit(0)
    cfg = load(TrainConfig, a.config, a.overrides, explicit={"shards": a.shards, "preset": a.preset,
                                                             "out_dir": a.out_dir, "steps": a.steps})
    return cfg, a


def checkpoints(out_dir: str | Path) -> list[Path]:
    return sorted(Path(out_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))


def save_checkpoint(path: Path, unet, opt, step: int, cfg: TrainConfig) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().cpu() for k, v in unet.trainable_state_dict().items()}, str(tmp / "unet_trainable.safetensors"))
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, "config": to_dict(cfg)}, indent=1))
    if path.exists():
        import shutil

        shutil.rmtree(path)
    tmp.rename(path)


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


def train(cfg: TrainConfig) -> dict:
    """The training run; returns the loss history, the final folder and the live model and parts."""
    urls = cli.resolve_files(cfg.shards, what="shards")
    world_batch = cfg.batch_size
    from accelerate import Accelerator
    from tqdm import tqdm

    from train.avsyncd_data import AVSyncDClipSpec, AVSyncDClips, collate
    from train.avsyncd_diffusion import train_scheduler, training_loss
    from train.models.avsyncd import segment_audio_tokens

    acc = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum)
    per = world_batch // (acc.num_processes * cfg.grad_accum)
    if per < 1 or per * acc.num_processes * cfg.grad_accum != world_batch:
        raise cli.UsageError(f"batch_size={world_batch} is not divisible by {acc.num_processes} processes x "
                             f"grad_accum={cfg.grad_accum}")
    from train.data import too_few_samples

    short = too_few_samples(urls, acc.num_processes, cfg.num_workers)
    if short:
        raise cli.UsageError(short)
    torch.manual_seed(cfg.seed + acc.process_index)
    parts = build_parts(cfg)
    if parts.random_weights and acc.is_main_process:
        log.warning("RANDOM-INIT weights (%s): this run checks the pipeline; its samples are noise", parts.sources["sd"])
    unet = parts.unet
    unet.set_trainable()
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    wdtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[cfg.mixed_precision]
    parts.frozen_to(acc.device, wdtype if acc.device.type == "cuda" else torch.float32)
    params = [p for p in unet.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in params)
    log.info("AVSyncD UNet: %.2fM trainable / %.2fM params", n_train / 1e6, sum(p.numel() for p in unet.parameters()) / 1e6)

    spec = AVSyncDClipSpec(duration=cfg.duration, fps=cfg.fps, height=cfg.height, width=cfg.width)
    ds = AVSyncDClips(urls, spec, shuffle=cfg.shuffle, repeat=True, seed=cfg.seed,
                      rank=acc.process_index, world_size=acc.num_processes, hflip=cfg.hflip,
                      random_window=cfg.random_window, limit=cfg.limit_clips)
    loader = torch.utils.data.DataLoader(ds, batch_size=per, collate_fn=collate, num_workers=cfg.num_workers)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    unet, opt = acc.prepare(unet, opt)
    raw = acc.unwrap_model(unet)
    step = 0
    ck = resume_from(cfg)
    if ck is not None:
        from safetensors.torch import load_file

        missing, unexpected = raw.load_state_dict(load_file(str(ck / "unet_trainable.safetensors")), strict=False)
        if unexpected:
            raise cli.UsageError(f"checkpoint {str(ck)!r} does not fit this model: {unexpected[:3]}")
        opt.load_state_dict(torch.load(ck / "optimizer.pt", map_location=acc.device, weights_only=False))
        step = json.loads((ck / "state.json").read_text())["step"]
        log.info("resumed from %s at step %d", ck, step)

    scheduler = train_scheduler(cfg.diffusion)
    with torch.no_grad():
        null_mel = torch.zeros(1, 1, 128, spec.mel.mel_frames, device=acc.device)
        null_audio = segment_audio_tokens(parts.encode_audio(null_mel), spec.num_frames)
    gen = torch.Generator(device=acc.device).manual_seed(cfg.seed * 1000 + acc.process_index + step)
    history: list[dict] = []
    pbar = tqdm(total=cfg.steps, initial=step, disable=not (cfg.progress and acc.is_main_process), desc="avsyncd")
    t0, last = time.time(), step
    data = iter(loader)
    unet.train()
    while step < cfg.steps:
        for _ in range(cfg.grad_accum):
            batch = next(data)
            with torch.no_grad():
                latents = parts.encode_frames(batch["video"].to(acc.device), gen)
                text = parts.encode_text(batch["label"]).float()
                audio = segment_audio_tokens(parts.encode_audio(batch["mel"].to(acc.device)), spec.num_frames)
            with acc.accumulate(unet), acc.autocast():
                out = training_loss(unet, latents, text, audio, null_audio, scheduler, cfg.diffusion.null_audio_prob, gen)
                acc.backward(out["loss"])
                if acc.sync_gradients and cfg.max_grad_norm:
                    acc.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step()
                opt.zero_grad(set_to_none=True)
        step += 1
        pbar.update(1)
        rec = {"step": step, "loss": out["loss"].item()}
        history.append(rec)
        if step % cfg.log_every == 0 or step == cfg.steps:
            dt = time.time() - t0
            rec["steps_per_s"] = (step - last) / max(dt, 1e-9)
            t0, last = time.time(), step
            if acc.is_main_process:
                log.info("step %d loss %.4f %.2f steps/s", step, rec["loss"], rec["steps_per_s"])
        if acc.is_main_process and (step % cfg.save_every == 0 or step == cfg.steps):
            save_checkpoint(Path(cfg.out_dir) / f"checkpoint-{step:06d}", raw, opt, step, cfg)
    pbar.close()
    acc.wait_for_everyone()
    final = Path(cfg.out_dir) / "final"
    if acc.is_main_process:
        raw.save_pretrained(str(final / "unet"))
        (final / "avsyncd.json").write_text(json.dumps({
            "sd": parts.sources["sd"], "imagebind": parts.sources["imagebind"], "preset": cfg.preset,
            "random_weights": parts.random_weights, "step": step, "height": cfg.height, "width": cfg.width,
            "fps": cfg.fps, "duration": cfg.duration, "diffusion": to_dict(cfg.diffusion)}, indent=1))
        print(f"saved to {final}")
    return {"history": history, "final": str(final), "random_weights": parts.random_weights, "unet": raw,
            "parts": parts, "null_audio": null_audio, "spec": spec}


def main(argv=None) -> int:
    """Command line: exit code 0, or 2 with one `error: ...` line for a user mistake."""
    def body():
        cfg, args = parse_args(argv)
        cli.setup_logging()
        if args.print_params:
            print_param_table()
            return 0
        train(cfg)
        return 0

    return cli.run_main(body)


if __name__ == "__main__":
    raise SystemExit(main())
