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

from media.decode import DecodeConfig, DecodedVideo, decode_video
from media.stream import ShardStream

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


def fit_frames(frames: np.ndarray, size: int, resize: str = "bilinear") -> np.ndarray:
    """uint8 [..., H, W, 3] -> uint8 [..., size, size, 3]: short side resized to size (`resize`
    interpolation, antialiased), center crop."""
    h, w = frames.shape[-3:-1]
    if (h, w) == (size, size):
        return frames
    lead = frames.shape[:-3]
    x = torch.from_numpy(np.ascontiguousarray(frames.reshape(-1, h, w, 3))).permute(0, 3, 1, 2).float()
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode=resize, antialias=True, align_corners=False)
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
    frames = fit_frames(clip_frames(video, starts, spec), spec.image_size, spec.resize)
    return {"mel": mel, "frames": torch.from_numpy(np.ascontiguousarray(frames))}


def list_videos(directory: str | Path) -> list[Path]:
    """The video files of a folder (recursive, sorted); nothing is decoded."""
    return sorted(p for p in Path(directory).rglob("*") if p.suffix.lower() in VIDEO_EXTS)


def decode_usable(path: str | Path, spec: ClipSpec, min_duration: float, report: dict | None = None) -> DecodedVideo | None:
    """Decode one video file at the classifier's size; None (and the reason in report['skipped']) if it
    is unreadable, has no audio or is shorter than min_duration."""
    try:
        v = decode_video(path, DecodeConfig(short_side=spec.image_size, audio_rate=spec.audio_rate))
    except Exception as e:  # noqa: BLE001 - any unreadable file is skipped and reported
        if report is not None:
            report.setdefault("skipped", []).append((str(path), f"unreadable: {e}"))
        return None
    return _usable(str(path), v, min_duration, report)


def _usable(name: str, v: DecodedVideo, min_duration: float, report: dict | None) -> DecodedVideo | None:
    if v.audio is None or v.duration < min_duration - 1e-6:
        if report is not None:
            why = "no audio" if v.audio is None else f"too short ({v.duration:.2f} s < {min_duration:.2f} s)"
            report.setdefault("skipped", []).append((name, why))
        return None
    return v


def iter_folder(directory: str | Path, spec: ClipSpec, min_duration: float, report: dict | None = None,
                paths: list[Path] | None = None) -> Iterator[tuple[str, DecodedVideo]]:
    """Decode the videos of a folder one at a time (or the given paths, in that order); skip (and
    count in report['skipped']) short or unreadable ones."""
    for p in list_videos(directory) if paths is None else paths:
        v = decode_usable(p, spec, min_duration, report)
        if v is not None:
            yield str(p), v


def iter_shards(patterns, spec: ClipSpec, min_duration: float, report: dict | None = None) -> Iterator[tuple[str, DecodedVideo]]:
    """Decoded segments of shards in order, one at a time (media.shards.iter_segments)."""
    from media.shards import iter_segments

    cfg = DecodeConfig(short_side=spec.image_size, max_fps=1000.0, audio_rate=spec.audio_rate)
    for seg in iter_segments(patterns, cfg):
        v = _usable(seg.key, seg.video, min_duration, report)
        if v is not None:
            yield seg.key, v


def split_for(items: list, part: int, parts: int) -> list:
    """Every parts-th item starting at part (the share of one rank x worker)."""
    return items[part::parts]


class InstanceStream(torch.utils.data.IterableDataset):
    """Endless training instances (21 offsets) from synthetic videos, a video folder, or shards.

    Synthetic: video i is `make_family_video(seed * 10**6 + i, families[i % len])` (seeds below
    EVAL_SEED_BASE); i counts from `start`, split over ranks x workers. Folder: streamed, never decoded
    as a whole: each pass lists the video files, shuffles them with a seed of (seed, pass), gives every
    rank x worker its share and decodes one video at a time; `skip` videos of this part's first pass are
    passed over without decoding (resume: the run continues its pass where it stopped, give or take the
    buffer). Shards: segments split between readers by `media.stream.ShardStream` (`data_mode` 'auto':
    resampled when there are fewer shards than ranks x workers, else exact: every segment once per epoch,
    a reader reads only its own segments). Either way the center is drawn uniformly where all offsets
    fit, and instances are mixed in a buffer of `shuffle_buffer` before yielding.
    """

    def __init__(self, spec: ClipSpec, offsets: np.ndarray, source: str = "synthetic", path=None,
                 seed: int = 0, start: int = 0, synthetic_fps: float = 24.0,
                 families: tuple[str, ...] = ("flash",), real_media: str = "", rank: int = 0, world_size: int = 1,
                 shuffle_buffer: int = 8, skip: int = 0, data_mode: str = "auto"):
        super().__init__()
        self.spec, self.offsets, self.source, self.path = spec, np.asarray(offsets), source, path
        self.seed, self.start, self.synthetic_fps = seed, start, synthetic_fps
        self.families, self.real_media = tuple(families), real_media
        self.rank, self.world_size, self.shuffle_buffer, self.skip = rank, world_size, max(1, shuffle_buffer), skip
        self.data_mode = data_mode
        self.need = required_duration(len(offsets), float(abs(offsets[1] - offsets[0])), spec)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        if info is not None:
            torch.set_num_threads(1)
        part, parts = self.rank * nw + wid, self.world_size * nw
        rng = np.random.default_rng([self.seed, self.start, part])
        half = self.need / 2
        if self.source == "synthetic":
            media = load_real_media(self.real_media, self.spec.image_size, self.spec.audio_rate) if self.real_media else None
            i = self.start + part
            while True:
                s = (self.seed * 10**6 + i) % EVAL_SEED_BASE
                v, _ = make_family_video(s, self.families[i % len(self.families)], duration=self.need + 0.5,
                                         size=self.spec.image_size, fps=self.synthetic_fps,
                                         audio_rate=self.spec.audio_rate, media=media)
                yield make_instance(v, rng.uniform(half, v.duration - half), self.offsets, self.spec)
                i += parts
        if self.source == "shards":
            yield from self._shard_instances(wid, nw, rng)
            return
        files = list_videos(self.path)
        if not files:
            raise RuntimeError(f"no videos in {self.path}")
        buf: list = []
        epoch, skip = 0, self.skip
        while True:
            order = list(np.random.default_rng([self.seed, epoch]).permutation(len(files)))
            mine = split_for([files[j] for j in order], part % max(1, min(parts, len(files))), min(parts, len(files)))
            if skip:
                mine, skip = mine[skip:], max(0, skip - len(mine))
            n = 0
            for _, v in iter_folder(self.path, self.spec, self.need, paths=mine):
                n += 1
                buf.append(make_instance(v, rng.uniform(half, v.duration - half), self.offsets, self.spec))
                if len(buf) >= self.shuffle_buffer:
                    yield buf.pop(int(rng.integers(len(buf))))
            epoch += 1
            if n == 0 and not buf and epoch > 1:
                raise RuntimeError(f"no usable sounding videos (>= {self.need:.1f} s with audio) in {self.path}")

    def _shard_instances(self, wid: int, nw: int, rng):
        """Shards: segments read as `media.stream.ShardStream` splits them (`data_mode`: exact, or resampled
        when there are fewer shards than readers), each decoded once and cut into an instance."""
        half = self.need / 2
        reader = ShardSegments(list(self.path), self.spec, self.need, seed=self.seed, rank=self.rank,
                               world_size=self.world_size, mode=self.data_mode, shuffle_shards=True)
        buf: list = []
        for item in reader.iter_reader(wid, nw):
            v = item["video"]
            buf.append(make_instance(v, rng.uniform(half, v.duration - half), self.offsets, self.spec))
            if len(buf) >= self.shuffle_buffer:
                yield buf.pop(int(rng.integers(len(buf))))


class ShardSegments(ShardStream):
    """Usable segments (>= `need` s with audio) of curated shards, decoded at the classifier's size, split
    between readers by `media.stream.ShardStream`. Unusable or undecodable segments are logged and skipped;
    RuntimeError when none of the shards' samples is usable."""

    def __init__(self, urls, spec: ClipSpec, need: float, **kw):
        super().__init__(urls, **kw)
        self.spec, self.need = spec, need
        self.tried = self.usable = 0

    def decode(self, raw: dict, rng) -> dict | None:
        from media.shards import decode_sample

        self.tried += 1
        cfg = DecodeConfig(short_side=self.spec.image_size, max_fps=1000.0, audio_rate=self.spec.audio_rate)
        report: dict = {}
        try:
            v = _usable(raw["__key__"], decode_sample(raw, cfg).video, self.need, report)
        except Exception as e:  # noqa: BLE001 - one bad segment must not stop training
            v, report["skipped"] = None, [(raw["__key__"], f"unreadable: {type(e).__name__}: {e}")]
        if v is None:
            log.warning("skipping segment %s: %s", *report["skipped"][0])
            if not self.usable and self.tried >= self.count_all():
                raise RuntimeError(f"no usable sounding videos (>= {self.need:.1f} s with audio) in {len(self.urls)} shard(s)")
            return None
        self.usable += 1
        return {"video": v}
