"""Shards -> JointDiT training clips: 2 s, 14 frames at 7 fps, first frame, 16 kHz audio + AudioLDM2 mel.

Reads the curation shards (`media.shards`), or latent shards written by `train.cache_latents`, as one
stream per process and DataLoader worker (`ShardStream`), in an order fixed by the seed so that a resumed
run continues where it stopped. Two data modes: exact (every sample exactly once per epoch over all
readers, epoch after epoch) and resampled (each reader draws whole shards with replacement).
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from media.decode import DecodedVideo
from media.shards import SegmentSample, decode_sample
from media.stream import ShardStream

log = logging.getLogger(__name__)


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


def window_start(duration: float, window: float, rng: random.Random | None = None) -> float:
    """Start of a `window`-second clip in a `duration`-second segment: uniform over the segment in training
    (rng given), 0 otherwise (and 0 when the segment is shorter than the window)."""
    return rng.uniform(0.0, max(0.0, duration - window)) if rng is not None else 0.0


def clip_from_sample(sample: SegmentSample, spec: ClipSpec, rng: random.Random | None = None) -> dict:
    """Random 2 s window in training (rng given), the first 2 s otherwise."""
    clip = make_clip(sample.video, spec, window_start(sample.video.duration, spec.duration, rng))
    clip["key"] = sample.key
    return clip


# ------------------------------------------------------------------------- the distributed sample stream

class ShardClips(ShardStream):
    """Training clips from curation shards: a random 2 s window of each segment per epoch (video [F, 3, H, W]
    in [-1, 1], audio [N], mel [1, T, n_mels]); `random_window=False` takes the first 2 s."""

    def __init__(self, patterns, spec: ClipSpec, random_window: bool = True, **kw):
        super().__init__(patterns, **kw)
        self.spec, self.random_window = spec, random_window

    def decode(self, raw: dict, rng: random.Random) -> dict:
        return clip_from_sample(decode_sample(raw), self.spec, rng if self.random_window else None)


# ------------------------------------------------------------------------------------- latent shards

LATENT_FORMAT = 2
"""Version of the latent-shard layout written by `train.cache_latents` (see its docstring)."""


def encode_latent_sample(key: str, tensors: dict[str, torch.Tensor], meta: dict) -> list[tuple[str, bytes]]:
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    return [(f"{key}.json", json.dumps(meta, sort_keys=True).encode()), (f"{key}.safetensors", data)]


def load_latent_sample(raw: dict) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors.torch import load

    meta = json.loads(raw["json"])
    if meta.get("format") != LATENT_FORMAT:
        raise ValueError(f"latent sample {raw['__key__']!r} was written by an older train.cache_latents "
                         f"(format {meta.get('format', 1)}, expected {LATENT_FORMAT}): cache the shards again")
    return load(raw["safetensors"]), meta


def draw_latents(t: dict[str, torch.Tensor], rng: random.Random) -> dict:
    """One training item from a cached segment: a random 2 s clip, a fresh VAE posterior sample of its video
    and audio (mean + std * noise, already scaled), one of its cached noise-augmented image latents."""
    c = rng.randrange(t["video_mean"].shape[0])
    k = rng.randrange(t["image_latents"].shape[1])
    g = torch.Generator().manual_seed(rng.getrandbits(63))

    def post(name):
        m, s = t[f"{name}_mean"][c].float(), t[f"{name}_std"][c].float()
        return m + s * torch.randn(m.shape, generator=g)

    return {"video_latents": post("video"), "audio_latents": post("audio"),
            "image_latents": t["image_latents"][c, k].float(), "image_embeds": t["image_embeds"][c].float(),
            "clip_index": c}


class LatentClips(ShardStream):
    """Training items from latent shards (`train.cache_latents`): video_latents [F, 4, h, w], image_latents
    [4, h, w], image_embeds [1, D], audio_latents [8, T, M], drawn afresh each epoch (`draw_latents`)."""

    def decode(self, raw: dict, rng: random.Random) -> dict:
        return draw_latents(load_latent_sample(raw)[0], rng)


def collate(items: list[dict]) -> dict:
    out = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out


__all__ = ["ClipSpec", "ShardClips", "LatentClips", "make_clip", "clip_from_sample", "draw_latents",
           "audioldm2_mel", "collate"]
