r"""Encode shards' clips to VAE/CLIP latents once, so training reads latents (`--latents`) instead of
decoding and encoding every step.

    python -m train.cache_latents --shards 'out/shards/*.tar' --out out/latents \
        --video-model stabilityai/stable-video-diffusion-img2vid --audio-model cvssp/audioldm2

Each input shard becomes `latents-{i:06d}.tar` with `<key>.safetensors` (video_latents [F, 4, h, w],
image_latents [4, h, w], image_embeds [1, D], audio_latents [8, T, M]) and `<key>.json`. Clips are the
first 2 s of each segment (deterministic), latents are one VAE posterior sample, the image latent uses
one fixed noise-augmentation draw (SVD's noise_aug_strength). Finished shards are skipped on rerun.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

log = logging.getLogger("train.cache_latents")


def cache_latents(shards, out_dir, video_model, audio_model, height=256, width=256, batch_size=4, noise_aug=0.02,
                  seed=0, device="cpu") -> list[str]:
    from curate.shards import expand_urls, iter_segments, write_tar_atomic
    from train.data import ClipSpec, clip_from_sample, collate, encode_latent_sample
    from train.experts import is_random, load_experts
    from train.jointdit import TrainConfig, encode_batch

    _, _, frozen = load_experts(video_model, audio_model)
    frozen.to(device)
    random_weights = is_random(video_model) or is_random(audio_model)
    if random_weights:
        log.warning("RANDOM-INIT VAEs/CLIP: cached latents are for pipeline tests only")
    spec = ClipSpec(height=height, width=width)
    cfg = TrainConfig(noise_aug=noise_aug)
    g = torch.Generator(device=device).manual_seed(seed)
    out_dir = Path(out_dir)
    written = []
    for i, url in enumerate(expand_urls(shards)):
        dst = out_dir / f"latents-{i:06d}.tar"
        if dst.exists():
            written.append(str(dst))
            continue
        members, buf = [], []

        def flush():
            batch = collate(buf)
            lat = encode_batch(frozen, {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}, cfg,
                               spec.fps, g)
            for j, key in enumerate(batch["key"]):
                members.extend(encode_latent_sample(key, {k: v[j] for k, v in lat.items()},
                                                    {"source": url, "random_weights": random_weights}))
            buf.clear()

        for s in iter_segments(url):
            buf.append(clip_from_sample(s, spec))
            if len(buf) == batch_size:
                flush()
        if buf:
            flush()
        write_tar_atomic(dst, members)
        written.append(str(dst))
        log.info("wrote %s (%d clips)", dst, len(members) // 2)
    return written


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m train.cache_latents", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--video-model", required=True)
    p.add_argument("--audio-model", required=True)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return cache_latents(a.shards, a.out, a.video_model, a.audio_model, a.height, a.width, a.batch_size, seed=a.seed,
                         device=a.device)


if __name__ == "__main__":
    main()
