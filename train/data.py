"""Shards -> JointDiT training clips: 2 s, 14 frames at 7 fps, first frame, 16 kHz audio + AudioLDM2 mel.

Reads the curation shards (`curate.shards`), or latent shards written by `train.cache_latents`.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from curate.media import DecodedVideo
from curate.shards import SegmentSample, expand_urls, group_samples, iter_segments, read_tar_members, webdataset_pipeline


@dataclass
class ClipSpec:
    """Shapes derived from durations and rates, in one place."""

    duration: float = 2.0
    fps: float = 7.0
    height: int = 256
    width: int = 256
    audio_rate: int = 16000
    n_mels: int = 64
    n_fft: int = 1024
    hop: int = 160
    win: int = 1024
    fmin: float = 0.0
    fmax: float = 8000.0

    @property
    def num_frames(self) -> int:
        return int(round(self.duration * self.fps))

    @property
    def num_samples(self) -> int:
        return int(round(self.duration * self.audio_rate))

    @property
    def mel_frames(self) -> int:
        return self.num_samples // self.hop


# ------------------------------------------------------------------------------------- AudioLDM2 mel


_MEL_CACHE: dict = {}


def mel_filters(spec: ClipSpec) -> torch.Tensor:
    key = (spec.audio_rate, spec.n_fft, spec.n_mels, spec.fmin, spec.fmax)
    if key not in _MEL_CACHE:
        import librosa

        fb = librosa.filters.mel(sr=spec.audio_rate, n_fft=spec.n_fft, n_mels=spec.n_mels, fmin=spec.fmin, fmax=spec.fmax)
        _MEL_CACHE[key] = torch.from_numpy(fb).float()
    return _MEL_CACHE[key]


def normalize_wav(wav: torch.Tensor) -> torch.Tensor:
    """AudioLDM's waveform normalisation: zero mean, peak 0.5."""
    wav = wav - wav.mean(dim=-1, keepdim=True)
    return 0.5 * wav / (wav.abs().amax(dim=-1, keepdim=True) + 1e-8)


def audioldm2_mel(wav: torch.Tensor, spec: ClipSpec) -> torch.Tensor:
    """AudioLDM2's log-mel (HiFi-GAN STFT: reflect pad (n_fft - hop)/2, no centring, magnitude, Slaney
    mel 0-8 kHz, log(clamp(., 1e-5))): [..., N] -> [..., mel_frames, n_mels]."""
    shape = wav.shape[:-1]
    x = wav.reshape(-1, wav.shape[-1]).float()
    pad = (spec.n_fft - spec.hop) // 2
    x = F.pad(x.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    st = torch.stft(x, spec.n_fft, spec.hop, spec.win, window=torch.hann_window(spec.win, device=x.device),
                    center=False, return_complex=True)
    mag = st.abs()
    mel = torch.log(torch.clamp(mel_filters(spec).to(x.device) @ mag, min=1e-5)).transpose(1, 2)
    t = spec.mel_frames
    mel = mel[:, :t] if mel.shape[1] >= t else F.pad(mel, (0, 0, 0, t - mel.shape[1]), value=float(np.log(1e-5)))
    return mel.reshape(*shape, t, spec.n_mels)


# ----------------------------------------------------------------------------------------- clips


def resize_center_crop(frames: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[T, 3, H, W] float -> [T, 3, h, w]: scale to cover, centre crop."""
    H, W = frames.shape[-2:]
    s = max(h / H, w / W)
    nh, nw = max(h, round(H * s)), max(w, round(W * s))
    x = F.interpolate(frames, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - h) // 2, (nw - w) // 2
    return x[..., top : top + h, left : left + w]


def make_clip(video: DecodedVideo, spec: ClipSpec, start: float = 0.0) -> dict:
    """A 2 s clip from `start`: video [F, 3, H, W] in [-1, 1] at 7 fps (first frame = condition),
    audio [N] at 16 kHz (AudioLDM-normalised), mel [1, T, n_mels]."""
    t = start + np.arange(spec.num_frames) / spec.fps
    idx = video.frame_index(t)
    fr = torch.from_numpy(np.ascontiguousarray(video.frames[idx])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    fr = resize_center_crop(fr, spec.height, spec.width).clamp(-1, 1)
    if video.audio_rate != spec.audio_rate:
        raise ValueError(f"audio at {video.audio_rate} Hz, expected {spec.audio_rate}")
    wav = normalize_wav(torch.from_numpy(video.audio_slice(start, start + spec.duration)))
    return {"video": fr, "audio": wav, "mel": audioldm2_mel(wav, spec).unsqueeze(0)}


def clip_from_sample(sample: SegmentSample, spec: ClipSpec, rng: random.Random | None = None) -> dict:
    """Random 2 s window in training (rng given), the first 2 s otherwise."""
    dur = sample.video.duration
    start = rng.uniform(0.0, max(0.0, dur - spec.duration)) if rng is not None else 0.0
    clip = make_clip(sample.video, spec, start)
    clip["key"] = sample.key
    return clip


class ShardClips(torch.utils.data.IterableDataset):
    """Endless (repeat=True) or single-pass stream of clips from curation shards."""

    def __init__(self, patterns, spec: ClipSpec, shuffle: int = 0, repeat: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.spec, self.shuffle, self.repeat, self.seed = spec, shuffle, repeat, seed
        urls = expand_urls(patterns)
        if world_size > 1 and len(urls) >= world_size:  # each process reads its own shards
            urls = urls[rank::world_size]
        self.patterns = urls

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        rng = random.Random(self.seed + (info.id if info else 0)) if self.shuffle else None
        while True:
            src = webdataset_pipeline(self.patterns, shuffle=self.shuffle) if self.shuffle else iter_segments(self.patterns)
            n = 0
            for s in src:
                n += 1
                yield clip_from_sample(s, self.spec, rng)
            if not self.repeat or n == 0:
                return


# ------------------------------------------------------------------------------------- latent shards


def encode_latent_sample(key: str, tensors: dict[str, torch.Tensor], meta: dict) -> list[tuple[str, bytes]]:
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    return [(f"{key}.json", json.dumps(meta, sort_keys=True).encode()), (f"{key}.safetensors", data)]


def iter_latent_samples(patterns) -> Iterator[dict]:
    from safetensors.torch import load

    urls = expand_urls(patterns)
    if not urls:
        raise FileNotFoundError(f"no latent shards match {patterns!r}")
    for url in urls:
        for s in group_samples(read_tar_members(url)):
            out = dict(load(s["safetensors"]))
            out["key"] = s["__key__"]
            out["meta"] = json.loads(s["json"])
            yield out


class LatentClips(torch.utils.data.IterableDataset):
    """Stream of cached latents (train.cache_latents): keys video_latents, image_latents, image_embeds,
    audio_latents."""

    def __init__(self, patterns, repeat: bool = True, shuffle: bool = False, seed: int = 0):
        self.patterns, self.repeat, self.shuffle, self.seed = patterns, repeat, shuffle, seed

    def __iter__(self):
        rng = random.Random(self.seed)
        while True:
            items = list(iter_latent_samples(self.patterns))
            if self.shuffle:
                rng.shuffle(items)
            for it in items:
                it.pop("meta")
                yield it
            if not self.repeat or not items:
                return


def collate(items: list[dict]) -> dict:
    out = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out


__all__ = ["ClipSpec", "ShardClips", "LatentClips", "make_clip", "clip_from_sample", "audioldm2_mel", "collate", "io"]
