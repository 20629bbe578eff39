r"""Encode shards' segments to VAE/CLIP latents once, so training reads latents (`--latents`) instead of
decoding and encoding every step, and still draws a new clip, posterior sample and noise augmentation
each time it sees a segment.

    python -m train.cache_latents --shards 'out/shards/*.tar' --out out/latents \
        --video-model stabilityai/stable-video-diffusion-img2vid --audio-model cvssp/audioldm2

Each input shard becomes `latents-{i:06d}.tar`, one sample per segment: `<key>.json` (format 2: clip
starts, stride, noise_aug, dtype, source, random_weights) and `<key>.safetensors` holding, for the C 2 s
clips of the segment starting every `--stride` seconds (0, 0.5, 1.0, ... up to duration - 2 s):
- `video_mean`, `video_std` [C, F, 4, h, w]: the video VAE posterior of every frame, times its scaling factor
- `audio_mean`, `audio_std` [C, 8, T, M]: the audio VAE posterior of the clip's log-mel, times its scaling factor
- `image_latents` [C, K, 4, h, w]: K draws of SVD's image latent (VAE mode of the noise-augmented first frame)
- `image_embeds` [C, 1, D]: the CLIP embedding of the first frame.
Training (`train.data.draw_latents`) picks one clip, samples mean + std * noise and picks one of the K image
latents per step. Shards already written are skipped on rerun.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

log = logging.getLogger("train.cache_latents")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def clip_starts(duration: float, clip: float = 2.0, stride: float = 0.5) -> list[float]:
    """Starts of the clips cached for a segment: 0, stride, ... while the clip fits (at least [0])."""
    n = int(np.floor((duration - clip) / stride + 1e-6)) + 1 if duration >= clip else 1
    return [round(i * stride, 6) for i in range(max(1, n))]


@torch.no_grad()
def posterior(vae, x: torch.Tensor, chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """A VAE's posterior (mean, std) of x [N, ...] times its scaling factor, in float32."""
    means, stds = [], []
    for i in range(0, x.shape[0], chunk):
        d = vae.encode(x[i : i + chunk].to(vae.dtype)).latent_dist
        means.append(d.mean.float())
        stds.append(d.std.float())
    sf = vae.config.scaling_factor
    return torch.cat(means) * sf, torch.cat(stds) * sf


@torch.no_grad()
def encode_segment(frozen, video, spec, stride: float = 0.5, noise_draws: int = 4, noise_aug: float = 0.02,
                   generator=None, device="cpu") -> tuple[dict[str, torch.Tensor], list[float]]:
    """Every cached quantity of one decoded segment (see the module docstring), float32."""
    from train.data import make_clip

    starts = clip_starts(video.duration, spec.duration, stride)
    clips = [make_clip(video, spec, s) for s in starts]
    frames = torch.stack([c["video"] for c in clips]).to(device)  # [C, F, 3, H, W]
    mel = torch.stack([c["mel"] for c in clips]).to(device)  # [C, 1, T, n_mels]
    c, f = frames.shape[:2]
    vm, vs = posterior(frozen.video_vae, frames.flatten(0, 1))
    am, as_ = posterior(frozen.audio_vae, mel)
    first = frames[:, 0]
    image = torch.stack([frozen.encode_image(first, noise_aug, generator) for _ in range(noise_draws)], 1)
    out = {"video_mean": vm.reshape(c, f, *vm.shape[1:]), "video_std": vs.reshape(c, f, *vs.shape[1:]),
           "audio_mean": am, "audio_std": as_, "image_latents": image, "image_embeds": frozen.clip_embed(first)}
    return out, starts


def cache_latents(shards, out_dir, video_model, audio_model, height=256, width=256, stride=0.5, noise_draws=4,
                  noise_aug=0.02, dtype="float16", seed=0, device="cpu") -> list[str]:
    from curate.shards import decode_sample, expand_urls, group_samples, stream_tar_members, write_tar_atomic
    from train.data import LATENT_FORMAT, ClipSpec, encode_latent_sample
    from train.experts import is_random, load_experts
    from train.jointdit import place_frozen

    _, _, frozen = load_experts(video_model, audio_model)
    place_frozen(frozen, device, torch.float32)
    random_weights = is_random(video_model) or is_random(audio_model)
    if random_weights:
        log.warning("RANDOM-INIT VAEs/CLIP: cached latents are for pipeline tests only")
    spec = ClipSpec(height=height, width=width)
    g = torch.Generator(device=device).manual_seed(seed)
    out_dir = Path(out_dir)
    written = []
    for i, url in enumerate(expand_urls(shards)):
        dst = out_dir / f"latents-{i:06d}.tar"
        if dst.exists():
            written.append(str(dst))
            continue
        members, n_clips = [], 0
        for raw in group_samples(stream_tar_members(url)):
            s = decode_sample(raw)
            t, starts = encode_segment(frozen, s.video, spec, stride, noise_draws, noise_aug, g, device)
            meta = {"format": LATENT_FORMAT, "source": url, "random_weights": random_weights, "starts": starts,
                    "stride": stride, "clip_seconds": spec.duration, "noise_aug": noise_aug, "dtype": dtype,
                    "height": height, "width": width}
            members.extend(encode_latent_sample(s.key, {k: v.to(DTYPES[dtype]) for k, v in t.items()}, meta))
            n_clips += len(starts)
        write_tar_atomic(dst, members)
        written.append(str(dst))
        log.info("wrote %s (%d segments, %d clips)", dst, len(members) // 2, n_clips)
    return written


@dataclass
class CacheConfig:
    shards: str = ""
    """Curated WebDataset shards (glob / brace pattern, quoted)."""
    out: str = ""
    """Output folder for latents-NNNNNN.tar."""
    video_model: str = ""
    """SVD img2vid in diffusers format (hub id or path)."""
    audio_model: str = ""
    """AudioLDM2 in diffusers format (hub id or path)."""
    height: int = 256
    """Frame height in pixels (the paper: 256)."""
    width: int = 256
    """Frame width in pixels (the paper: 256)."""
    stride: float = 0.5
    """Seconds between cached clip starts (project's choice; training draws one of them per visit)."""
    noise_draws: int = 4
    """Noise-augmented image latents cached per clip (project's choice)."""
    noise_aug: float = 0.02
    """SVD noise augmentation of the image."""
    dtype: Literal["float32", "float16", "bfloat16"] = "float16"
    """Stored tensor type."""
    seed: int = 0
    """Seed of the noise-augmentation draws."""
    device: str = "auto"
    """Device for the encoders (auto: cuda when available, else cpu)."""


def main(argv=None) -> list[str]:
    from common.cli import UsageError, add_config_arguments, output_dir, resolve_files, settings_help, setup_logging
    from common.config import load

    p = argparse.ArgumentParser(prog="python -m train.cache_latents", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", help="curated WebDataset shards (glob / brace pattern)")
    p.add_argument("--out", help="output folder for latents-NNNNNN.tar")
    p.add_argument("--video-model", help="SVD img2vid in diffusers format (hub id or path)")
    p.add_argument("--audio-model", help="AudioLDM2 in diffusers format (hub id or path)")
    p.add_argument("--height", type=int, help="frame height in pixels (default: 256)")
    p.add_argument("--width", type=int, help="frame width in pixels (default: 256)")
    p.add_argument("--stride", type=float, help="seconds between cached clip starts (default: 0.5)")
    p.add_argument("--noise-draws", type=int, help="noise-augmented image latents cached per clip (default: 4)")
    p.add_argument("--noise-aug", type=float, help="SVD noise augmentation of the image (default: 0.02)")
    p.add_argument("--dtype", choices=list(DTYPES), help="stored tensor type (default: float16)")
    p.add_argument("--seed", type=int, help="seed of the noise-augmentation draws (default: 0)")
    p.add_argument("--device", help="device for the encoders (default: cuda when available, else cpu)")
    add_config_arguments(p, example="stride=1.0 noise_draws=2")
    a = p.parse_args(argv)
    if a.help_config:
        print(settings_help(CacheConfig))
        raise SystemExit(0)
    cfg = load(CacheConfig, a.config, a.overrides, explicit={f: getattr(a, f) for f in (
        "shards", "out", "video_model", "audio_model", "height", "width", "stride", "noise_draws", "noise_aug", "dtype",
        "seed", "device")})
    setup_logging()
    for name in ("shards", "out", "video_model", "audio_model"):
        if not getattr(cfg, name):
            raise UsageError(f"--{name.replace('_', '-')} is required")
    resolve_files(cfg.shards, what="shards")
    output_dir(cfg.out, what="--out")
    if cfg.stride <= 0 or cfg.noise_draws < 1:
        raise UsageError("--stride must be > 0 and --noise-draws >= 1")
    from curate.models import resolve_device

    device = resolve_device(cfg.device)
    return cache_latents(cfg.shards, cfg.out, cfg.video_model, cfg.audio_model, cfg.height, cfg.width, cfg.stride,
                         cfg.noise_draws, cfg.noise_aug, cfg.dtype, cfg.seed, device)


def cli(argv=None) -> int:
    """`python -m train.cache_latents`: user mistakes are one `error:` line and exit code 2."""
    from common.cli import run_main

    def body() -> int:
        out = main(argv)
        print(f"saved to {Path(out[0]).parent if out else '-'} ({len(out)} latent shards)")
        return 0

    return run_main(body)


if __name__ == "__main__":
    import sys

    sys.exit(cli())
