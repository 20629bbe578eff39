"""Multi-offset instances from sounding videos (synthetic, a folder of videos, or curated shards).

An instance is K audio clips and K video clips cut from one source at the same K offsets around a
center time (training: K = 21 offsets -2.0..+2.0 s in 0.2 s steps, which needs 6 s of source;
evaluation: K = 31 offsets -0.6..+0.6 s in 0.04 s steps, 3.2 s). Audio clip k and video clip k are
the positive pair; every other pair of the instance is a shifted (hard) negative.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from curate.media import DecodeConfig, DecodedVideo, MediaError, decode_video

from .audio import log_mel
from .config import ClipSpec
from .families import load_real_media, make_family_video

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".mov", ".avi")
EVAL_SEED_BASE = 1_000_000_000
"""Synthetic seeds >= this are held out: training draws seeds below it."""


def clip_offsets(num: int, step: float) -> np.ndarray:
    """num offsets centred on 0 with the given step, e.g. (21, 0.2) -> -2.0..+2.0."""
    return (np.arange(num) - (num - 1) / 2) * step


def required_duration(num: int, step: float, spec: ClipSpec) -> float:
    """Source seconds an instance needs: the span of the offsets plus one clip."""
    return float((num - 1) * step + spec.duration)


def fit_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 [..., H, W, 3] -> uint8 [..., size, size, 3]: short side resized to size, center crop."""
    h, w = frames.shape[-3:-1]
    if (h, w) == (size, size):
        return frames
    lead = frames.shape[:-3]
    x = torch.from_numpy(np.ascontiguousarray(frames.reshape(-1, h, w, 3))).permute(0, 3, 1, 2).float()
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[:, :, top : top + size, left : left + size].round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy().reshape(*lead, size, size, 3)


def clip_audio(video: DecodedVideo, starts: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """float32 [K, spec.num_samples]: audio of [s, s + duration) for each start s (zero-padded outside)."""
    out = np.stack([video.audio_slice(float(s), float(s) + spec.duration) for s in starts])
    return out[:, : spec.num_samples]


def clip_frames(video: DecodedVideo, starts: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """uint8 [K, T, H, W, 3]: frames shown at s + i / fps (i < num_frames), clamped to the video."""
    t = np.asarray(starts, dtype=np.float64)[:, None] + np.arange(spec.num_frames)[None, :] / spec.fps
    return video.frames[video.frame_index(t)]


def make_instance(video: DecodedVideo, center: float, offsets: np.ndarray, spec: ClipSpec) -> dict:
    """K = len(offsets) clip pairs around center: {'mel': [K, 1, F, T] float, 'frames': [K, T, S, S, 3] uint8}."""
    if video.audio_rate != spec.audio_rate:
        raise ValueError(f"audio rate {video.audio_rate} != {spec.audio_rate}")
    starts = center + np.asarray(offsets) - spec.duration / 2
    mel = log_mel(torch.from_numpy(clip_audio(video, starts, spec)), spec)
    frames = fit_frames(clip_frames(video, starts, spec), spec.image_size)
    return {"mel": mel, "frames": torch.from_numpy(np.ascontiguousarray(frames))}


def iter_folder(directory: str | Path, spec: ClipSpec, min_duration: float, report: dict | None = None) -> Iterator[tuple[str, DecodedVideo]]:
    """Decode every video file of a folder; skip (and count in report['skipped']) short or unreadable ones."""
    cfg = DecodeConfig(short_side=spec.image_size, audio_rate=spec.audio_rate)
    paths = sorted(p for p in Path(directory).rglob("*") if p.suffix.lower() in VIDEO_EXTS)
    for p in paths:
        try:
            v = decode_video(p, cfg)
        except (MediaError, Exception) as e:  # noqa: BLE001 - any unreadable file is skipped and reported
            if report is not None:
                report.setdefault("skipped", []).append((str(p), f"unreadable: {e}"))
            continue
        if v.audio is None or v.duration < min_duration - 1e-6:
            if report is not None:
                why = "no audio" if v.audio is None else f"too short ({v.duration:.2f} s < {min_duration:.2f} s)"
                report.setdefault("skipped", []).append((str(p), why))
            continue
        yield str(p), v


def iter_shards(patterns, spec: ClipSpec, min_duration: float, report: dict | None = None) -> Iterator[tuple[str, DecodedVideo]]:
    from curate.shards import iter_segments

    cfg = DecodeConfig(short_side=spec.image_size, max_fps=1000.0, audio_rate=spec.audio_rate)
    for seg in iter_segments(patterns, cfg):
        if seg.video.audio is None or seg.video.duration < min_duration - 1e-6:
            if report is not None:
                report.setdefault("skipped", []).append((seg.key, f"too short ({seg.video.duration:.2f} s)"))
            continue
        yield seg.key, seg.video


class InstanceStream(torch.utils.data.IterableDataset):
    """Endless training instances (21 offsets) from synthetic videos, a video folder, or shards.

    Synthetic: video i is `make_sounding_video(seed * 10**6 + i)` (i counts from `start`, split over
    workers), all below EVAL_SEED_BASE. Folder/shards: decoded once per pass, shuffled per pass, the
    center drawn uniformly where all offsets fit.
    """

    def __init__(self, spec: ClipSpec, offsets: np.ndarray, source: str = "synthetic", path=None,
                 seed: int = 0, start: int = 0, synthetic_fps: float = 24.0,
                 families: tuple[str, ...] = ("flash",), real_media: str = ""):
        super().__init__()
        self.spec, self.offsets, self.source, self.path = spec, np.asarray(offsets), source, path
        self.seed, self.start, self.synthetic_fps = seed, start, synthetic_fps
        self.families, self.real_media = tuple(families), real_media
        self.need = required_duration(len(offsets), float(abs(offsets[1] - offsets[0])), spec)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        if info is not None:
            torch.set_num_threads(1)
        rng = np.random.default_rng([self.seed, self.start, wid])
        half = self.need / 2
        if self.source == "synthetic":
            media = load_real_media(self.real_media, self.spec.image_size, self.spec.audio_rate) if self.real_media else None
            i = self.start + wid
            while True:
                s = (self.seed * 10**6 + i) % EVAL_SEED_BASE
                v, _ = make_family_video(s, self.families[i % len(self.families)], duration=self.need + 0.5,
                                         size=self.spec.image_size, fps=self.synthetic_fps,
                                         audio_rate=self.spec.audio_rate, media=media)
                yield make_instance(v, rng.uniform(half, v.duration - half), self.offsets, self.spec)
                i += nw
        it = iter_folder if self.source == "videos" else iter_shards
        while True:
            n = 0
            items = list(it(self.path, self.spec, self.need)) if self.source == "videos" else None
            gen = items if items is not None else it(self.path, self.spec, self.need)
            if items is not None:
                rng.shuffle(items)
            for k, (_, v) in enumerate(gen):
                if k % nw != wid:
                    continue
                n += 1
                yield make_instance(v, rng.uniform(half, v.duration - half), self.offsets, self.spec)
            if n == 0:
                raise RuntimeError(f"no usable sounding videos (>= {self.need:.1f} s with audio) in {self.path}")
