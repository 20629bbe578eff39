r"""Encode shards' segments to VAE/CLIP latents once, so training reads latents (`--latents`) instead of
decoding and encoding every step, and still draws a new clip, posterior sample and noise augmentation
each time it sees a segment.

    python -m train.cache_latents --shards 'out/shards/*.tar' --out out/latents \
        --video-model stabilityai/stable-video-diffusion-img2vid --audio-model cvssp/audioldm2

Each input shard becomes a shard of the same file name in `--out`, one sample per segment: `<key>.json` (format 2: clip
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


def job_of_env() -> tuple[int, int]:
    """(job index, number of jobs) from torchrun / SLURM variables (RANK, WORLD_SIZE; SLURM_PROCID,
    SLURM_NTASKS), else (0, 1)."""
    import os

    for idx, num in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if os.environ.get(idx) is not None and os.environ.get(num) is not None:
            return int(os.environ[idx]), int(os.environ[num])
    return 0, 1


def output_names(urls: list[str]) -> list[str]:
    """The output file of each input shard: the input's file name (`train-000012.tar` -> `train-000012.tar`
    in --out), so any job can tell which outputs are whose; ValueError when two inputs share a name."""
    names = [Path(u).name if Path(u).suffix == ".tar" else Path(u).name + ".tar" for u in urls]
    seen: dict[str, str] = {}
    for u, n in zip(urls, names):
        if n in seen:
            raise ValueError(f"shards {seen[n]!r} and {u!r} have the same file name {n!r}: their latent shards would "
                             "collide in --out (give shards with distinct names)")
        seen[n] = u
    return names


def jobs_share(urls: list[str], job_index: int, num_jobs: int) -> list[int]:
    """Indices of the shards job `job_index` of `num_jobs` caches: every num_jobs-th of the sorted list."""
    if num_jobs < 1 or not 0 <= job_index < num_jobs:
        raise ValueError(f"job index {job_index} out of range for {num_jobs} job(s)")
    return list(range(job_index, len(urls), num_jobs))


def done_marker(dst: Path) -> Path:
    """The completion marker of an output shard (written after the shard, atomically)."""
    return dst.with_name(dst.name + ".done.json")


def write_json_atomic(path: Path, obj: dict) -> None:
    import json
    import os

    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, sort_keys=True, indent=1))
    os.replace(tmp, path)


def is_done(dst: Path, settings: dict) -> bool:
    """True when `dst` and its marker exist and the marker's settings are these (a different setting is
    ValueError: the folder holds another cache); a shard without marker (a job stopped while writing) is
    redone."""
    import json

    m = done_marker(dst)
    if not (m.is_file() and dst.is_file()):
        return False
    old = json.loads(m.read_text()).get("settings", {})
    if old != settings:
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        raise ValueError(f"{dst} was cached with other settings ({', '.join(f'{k}={old.get(k)!r}' for k in diff)}; "
                         f"now {', '.join(f'{k}={settings.get(k)!r}' for k in diff)}): use another --out")
    return True


def shard_seed(seed: int, name: str) -> int:
    """The noise-augmentation seed of one shard: from the seed and the shard's name (not its position), so
    the output does not depend on how the shards are split between jobs."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}-{name}".encode()).digest()[:8], "little") >> 1


def cache_latents(shards, out_dir, video_model, audio_model, height=256, width=256, stride=0.5, noise_draws=4,
                  noise_aug=0.02, dtype="float16", seed=0, device="cpu", job_index=0, num_jobs=1) -> list[str]:
    """Cache this job's share of the shards (`jobs_share`) into out_dir; returns the job's output shards
    (already finished ones included). Safe to run as several jobs over one out_dir and to rerun."""
    from media.shards import decode_sample, expand_urls, group_samples, stream_tar_members, write_tar_atomic
    from train.data import LATENT_FORMAT, ClipSpec, encode_latent_sample
    from train.experts import is_random, load_experts
    from train.jointdit import place_frozen

    urls = expand_urls(shards)
    names = output_names(urls)
    out_dir = Path(out_dir)
    settings = {"format": LATENT_FORMAT, "video_model": str(video_model), "audio_model": str(audio_model),
                "height": height, "width": width, "stride": stride, "noise_draws": noise_draws, "noise_aug": noise_aug,
                "dtype": dtype, "seed": seed}
    mine = jobs_share(urls, job_index, num_jobs)
    todo = [i for i in mine if not is_done(out_dir / names[i], settings)]
    written = [str(out_dir / names[i]) for i in mine if i not in todo]
    log.info("job %d of %d: %d shard(s), %d already cached, %d to do", job_index, num_jobs, len(mine),
             len(mine) - len(todo), len(todo))
    if not todo:
        return sorted(written)
    for i in todo:  # leftovers of a stopped run of this job: temporary files of its own shards
        for stale in out_dir.glob(f".{names[i]}.tmp*"):
            stale.unlink(missing_ok=True)
    _, _, frozen = load_experts(video_model, audio_model)
    place_frozen(frozen, device, torch.float32)
    random_weights = is_random(video_model) or is_random(audio_model)
    if random_weights:
        log.warning("RANDOM-INIT VAEs/CLIP: cached latents are for pipeline tests only")
    spec = ClipSpec(height=height, width=width)
    for i in todo:
        url, dst = urls[i], out_dir / names[i]
        done_marker(dst).unlink(missing_ok=True)
        g = torch.Generator(device=device).manual_seed(shard_seed(seed, names[i]))
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
        write_json_atomic(done_marker(dst), {"source": url, "segments": len(members) // 2, "clips": n_clips,
                                             "random_weights": random_weights, "settings": settings})
        written.append(str(dst))
        log.info("wrote %s (%d segments, %d clips)", dst, len(members) // 2, n_clips)
    return sorted(written)


@dataclass
class CacheConfig:
    shards: str = ""
    """Curated WebDataset shards (glob / brace pattern, quoted)."""
    out: str = ""
    """Output folder (one latent shard per input shard, named as the input)."""
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
    """Device for the encoders (auto: cuda when available, else cpu; cuda:LOCAL_RANK under torchrun)."""
    job_index: int = -1
    """This job's index among num_jobs (-1: RANK / SLURM_PROCID, else 0)."""
    num_jobs: int = 0
    """Jobs sharing the shards (0: WORLD_SIZE / SLURM_NTASKS, else 1)."""


def main(argv=None) -> list[str]:
    from common.cli import UsageError, add_config_arguments, output_dir, resolve_files, settings_help, setup_logging
    from common.config import load

    p = argparse.ArgumentParser(prog="python -m train.cache_latents", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", help="curated WebDataset shards (glob / brace pattern)")
    p.add_argument("--out", help="output folder (one latent shard per input shard, named as the input)")
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
    p.add_argument("--job-index", type=int, help="this job's index (default: RANK or SLURM_PROCID, else 0)")
    p.add_argument("--num-jobs", type=int, help="jobs sharing the shards (default: WORLD_SIZE or SLURM_NTASKS, else 1)")
    add_config_arguments(p, example="stride=1.0 noise_draws=2")
    a = p.parse_args(argv)
    if a.help_config:
        print(settings_help(CacheConfig))
        raise SystemExit(0)
    cfg = load(CacheConfig, a.config, a.overrides, explicit={f: getattr(a, f) for f in (
        "shards", "out", "video_model", "audio_model", "height", "width", "stride", "noise_draws", "noise_aug", "dtype",
        "seed", "device", "job_index", "num_jobs")})
    setup_logging()
    for name in ("shards", "out", "video_model", "audio_model"):
        if not getattr(cfg, name):
            raise UsageError(f"--{name.replace('_', '-')} is required")
    urls = resolve_files(cfg.shards, what="shards")
    if cfg.stride <= 0 or cfg.noise_draws < 1:
        raise UsageError("--stride must be > 0 and --noise-draws >= 1")
    env_index, env_num = job_of_env()
    job_index = cfg.job_index if cfg.job_index >= 0 else env_index
    num_jobs = cfg.num_jobs if cfg.num_jobs > 0 else (env_num if cfg.job_index < 0 else 1)
    if not 0 <= job_index < num_jobs:
        raise UsageError(f"--job-index {job_index} out of range for --num-jobs {num_jobs}")
    try:
        output_names(urls)
    except ValueError as e:
        raise UsageError(str(e)) from None
    output_dir(cfg.out, what="--out")
    import os

    from curate.models import resolve_device

    device = resolve_device(cfg.device)
    if device == "cuda" and os.environ.get("LOCAL_RANK") is not None:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    try:
        return cache_latents(urls, cfg.out, cfg.video_model, cfg.audio_model, cfg.height, cfg.width, cfg.stride,
                             cfg.noise_draws, cfg.noise_aug, cfg.dtype, cfg.seed, device, job_index, num_jobs)
    except ValueError as e:
        if "other settings" in str(e):
            raise UsageError(str(e)) from None
        raise


def cli(argv=None) -> int:
    """`python -m train.cache_latents`: user mistakes are one `error:` line and exit code 2."""
    from common.cli import run_main

    def body() -> int:
        out = main(argv)
        print(f"saved to {Path(out[0]).parent if out else '-'} ({len(out)} latent shards of this job)")
        return 0

    return run_main(body)


if __name__ == "__main__":
    import sys

    sys.exit(cli())
