"""Synthetic sounding videos with known properties, for tests, benchmarks and the sample set.

Each maker returns a `DecodedVideo` (frames + mono audio); `write_video` encodes it to an mp4 file.
The properties are what the filters measure: a static picture, full-frame noise, silence, a hard cut,
and a moving object whose bounces coincide with clicks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from media.decode import DecodedVideo
from media.encode import encode_mp4

AUDIO_RATE = 16000


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth coloured gradient with mild texture (uint8 [h, w, 3])."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(40, 200, 3), rng.uniform(40, 200, 3)
    a = (xx / max(w - 1, 1))[..., None]
    img = c0 * (1 - a) + c1 * a + rng.normal(0, 6, (h, w, 1))
    return img.clip(0, 255).astype(np.uint8)


def click(rate: int = AUDIO_RATE, freq: float = 1800.0, length: float = 0.05, amp: float = 0.6) -> np.ndarray:
    t = np.arange(int(length * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t) * np.exp(-t * 60)).astype(np.float32)


def _video(frames: np.ndarray, fps: float, audio: np.ndarray | None) -> DecodedVideo:
    return DecodedVideo(frames, fps, audio, AUDIO_RATE, {"synthetic": True})


def static_video(duration: float = 6.0, size: tuple[int, int] = (128, 160), fps: float = 12.0, seed: int = 0) -> DecodedVideo:
    """A still picture with clicks: pixel difference ~ 0 (dropped as static)."""
    rng = np.random.default_rng(seed)
    n = int(duration * fps)
    bg = _background(rng, *size)
    return _video(np.repeat(bg[None], n, 0), fps, clicks_at(np.arange(0.25, duration, 0.5), duration))


def noise_video(duration: float = 6.0, size: tuple[int, int] = (128, 160), fps: float = 12.0, seed: int = 0) -> DecodedVideo:
    """Independent full-frame noise every frame: pixel difference ~ 0.33 (dropped as too sharp)."""
    rng = np.random.default_rng(seed)
    n = int(duration * fps)
    frames = rng.integers(0, 256, (n, *size, 3), dtype=np.uint8)
    return _video(frames, fps, clicks_at(np.arange(0.25, duration, 0.5), duration))


def bouncing_video(
    duration: float = 6.0,
    size: tuple[int, int] = (128, 160),
    fps: float = 12.0,
    seed: int = 0,
    period: float = 0.5,
    silent: bool = False,
    audio_offset: float = 0.0,
) -> tuple[DecodedVideo, np.ndarray]:
    """A disc falling and bouncing on the floor every `period` s; a click at each impact.

    Returns the video and the impact times (s). `audio_offset` delays the clicks (desynchronised copy).
    """
    rng = np.random.default_rng(seed)
    h, w = size
    n = int(round(duration * fps))
    bg = _background(rng, h, w)
    color = rng.uniform(0, 255, 3)
    r = max(4, h // 8)
    floor = h - r - 2
    top = r + 4
    phase = rng.uniform(0, period)
    impacts = np.arange(phase, duration, period)
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        t = i / fps
        u = ((t - phase) % period) / period  # 0 at impact
        y = floor - (floor - top) * 4 * u * (1 - u)  # parabola: floor at impacts
        x = w / 2 + (w / 3) * np.sin(2 * np.pi * t / (4 * period))
        m = (yy - y) ** 2 + (xx - x) ** 2 <= r * r
        f = bg.copy()
        f[m] = color
        frames[i] = f
    audio = np.zeros(int(round(duration * AUDIO_RATE)), np.float32) if silent else clicks_at(impacts + audio_offset, duration)
    return _video(frames, fps, audio), impacts


def cut_video(duration: float = 8.0, cut_at: float = 4.0, size: tuple[int, int] = (128, 160), fps: float = 12.0, seed: int = 0) -> DecodedVideo:
    """Two different bouncing-disc shots joined by a hard cut at `cut_at` seconds."""
    a, _ = bouncing_video(cut_at, size, fps, seed=seed)
    b, _ = bouncing_video(duration - cut_at, size, fps, seed=seed + 1000)
    b.frames = 255 - b.frames  # make the second shot look nothing like the first
    return _video(np.concatenate([a.frames, b.frames]), fps, np.concatenate([a.audio, b.audio]))


def clicks_at(times: np.ndarray, duration: float, rate: int = AUDIO_RATE) -> np.ndarray:
    audio = np.zeros(int(round(duration * rate)), np.float32)
    c = click(rate)
    for t in np.asarray(times):
        i = int(round(t * rate))
        if 0 <= i < audio.shape[0]:
            j = min(audio.shape[0], i + c.shape[0])
            audio[i:j] += c[: j - i]
    return audio.clip(-1, 1)


def write_video(path: str | Path, video: DecodedVideo, with_audio: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_mp4(video.frames, video.fps, video.audio if with_audio else None, video.audio_rate, crf=20))
    return path
