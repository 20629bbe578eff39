"""Shards -> AVSyncD training clips: 2 s, 12 frames at 6 fps (256x256; GreatestHits 128x256), the class label, and
ImageBind's log-mel of the 16 kHz audio (1 x 128 x 204).

Reads the curation shards through `media.shards` (decoded segments with their JSON metadata); a random 2 s
window per segment in training, optional horizontal flip (the authors' `randflip`). Also loads a user's
conditioning image and audio file for the sampler.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import numpy as np
import torch

from media.decode import DecodedVideo
from media.shards import SegmentSample, decode_sample
from sync_classifier.audio import log_mel
from sync_classifier.config import ClipSpec as MelSpec
from media.stream import ShardStream
from train.data import collate, resize_center_crop, window_start


@dataclass
class AVSyncDClipSpec:
    """Shapes derived from durations and rates, in one place."""

    duration: float = 2.0
    fps: float = 6.0
    height: int = 256
    width: int = 256
    audio_rate: int = 16000

    @property
    def num_frames(self) -> int:
        return int(round(self.duration * self.fps))

    @property
    def num_samples(self) -> int:
        return int(round(self.duration * self.audio_rate))

    @property
    def mel(self) -> MelSpec:
        """ImageBind's mel settings (128 bins, 204 frames for 2 s)."""
        return MelSpec(audio_rate=self.audio_rate, duration=self.duration)


def imagebind_mel(wave: torch.Tensor, spec: AVSyncDClipSpec) -> torch.Tensor:
    """[..., samples] at 16 kHz -> ImageBind's normalised log-mel [..., 1, 128, 204] (zero-padded to 2 s)."""
    n = spec.num_samples
    wave = wave[..., :n]
    if wave.shape[-1] < n:
        wave = torch.nn.functional.pad(wave, (0, n - wave.shape[-1]))
    return log_mel(wave, spec.mel)


def make_clip(video: DecodedVideo, spec: AVSyncDClipSpec, start: float = 0.0, flip: bool = False) -> dict:
    """video [F, 3, H, W] in [-1, 1] (frame 1 = the conditioning image), mel [1, 128, 204], wave [N]."""
    if video.audio is None:
        raise ValueError("segment has no audio")
    if video.audio_rate != spec.audio_rate:
        raise ValueError(f"audio at {video.audio_rate} Hz, expected {spec.audio_rate}")
    idx = video.frame_index(start + np.arange(spec.num_frames) / spec.fps)
    fr = torch.from_numpy(np.ascontiguousarray(video.frames[idx])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    fr = resize_center_crop(fr, spec.height, spec.width).clamp(-1, 1)
    if flip:
        fr = fr.flip(-1)
    wave = torch.from_numpy(np.ascontiguousarray(video.audio_slice(start, start + spec.duration), dtype=np.float32))
    return {"video": fr, "mel": imagebind_mel(wave, spec), "wave": imagebind_pad(wave, spec)}


def imagebind_pad(wave: torch.Tensor, spec: AVSyncDClipSpec) -> torch.Tensor:
    n = spec.num_samples
    return torch.nn.functional.pad(wave[:n], (0, max(0, n - wave.shape[-1])))


def label_of(meta: dict) -> str:
    for k in ("label", "class", "category"):
        if meta.get(k):
            return str(meta[k])
    return ""


def clip_from_sample(sample: SegmentSample, spec: AVSyncDClipSpec, rng: random.Random | None = None,
                     hflip: bool = False) -> dict:
    """Random 2 s window (and flip) in training (rng given), the first 2 s otherwise."""
    start = window_start(sample.video.duration, spec.duration, rng)
    flip = bool(hflip and rng is not None and rng.random() < 0.5)
    clip = make_clip(sample.video, spec, start, flip)
    clip["key"], clip["label"] = sample.key, label_of(sample.meta)
    return clip


class AVSyncDClips(ShardStream):
    """Endless (repeat=True) or single-pass stream of clips from curation shards, split between the processes
    of a distributed run and their DataLoader workers (disjoint, every segment once per epoch: `ShardStream`);
    `limit` keeps the first N segments of each reader's epoch (for overfitting checks). Unusable segments are
    logged and skipped. `seed` must be the same on every process (it orders the shards of an epoch)."""

    def __init__(self, patterns, spec: AVSyncDClipSpec, shuffle: int = 0, repeat: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1, hflip: bool = False, random_window: bool = True, limit: int = 0,
                 **stream_kw):
        super().__init__(patterns, shuffle=shuffle, repeat=repeat, seed=seed, rank=rank, world_size=world_size, **stream_kw)
        self.spec, self.hflip, self.random_window, self.limit = spec, hflip, random_window, limit

    def raw_epoch(self, epoch, split, reader):
        src = super().raw_epoch(epoch, split, reader)
        return itertools.islice(src, self.limit) if self.limit else src

    def decode(self, raw: dict, rng: random.Random) -> dict | None:
        import logging

        try:
            return clip_from_sample(decode_sample(raw), self.spec, rng if self.random_window else None, self.hflip)
        except Exception as e:  # noqa: BLE001 - one bad segment must not stop training
            logging.getLogger(__name__).warning("skipping segment %s: %s: %s", raw.get("__key__"), type(e).__name__, e)
            return None


# ------------------------------------------------------------------------------------- sampler inputs


def load_image(path: str, spec: AVSyncDClipSpec) -> torch.Tensor:
    """An image file -> [3, H, W] in [-1, 1], resized to cover and centre-cropped."""
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB"))
    x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    return resize_center_crop(x, spec.height, spec.width)[0].clamp(-1, 1)


def load_audio(path: str, rate: int = 16000) -> np.ndarray:
    """Any audio (or video) file PyAV reads -> mono float32 at `rate`."""
    import av

    out = []
    with av.open(str(path)) as c:
        if not c.streams.audio:
            raise ValueError(f"{path!r} has no audio stream")
        res = av.AudioResampler(format="flt", layout="mono", rate=rate)
        for frame in c.decode(c.streams.audio[0]):
            for f in res.resample(frame):
                out.append(f.to_ndarray().reshape(-1))
        for f in res.resample(None):
            out.append(f.to_ndarray().reshape(-1))
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


__all__ = ["AVSyncDClipSpec", "AVSyncDClips", "make_clip", "clip_from_sample", "imagebind_mel", "load_image",
           "load_audio", "collate", "label_of"]
