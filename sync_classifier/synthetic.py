"""Synthetic sounding videos: visual events that coincide with audio events, at random times.

Each video has one or two event streams. A stream's events are at random times (gaps drawn
uniformly from 0.3-1.1 s, or 0.45-1.5 s with two streams), so that a window's event pattern is
unique and the audio-video offset can only be found by matching events in time. Each stream has an
object whose look changes at its events and a sound played at each event:

- objects: a ball that bounces (floor contact at the event), an object that flashes (decays in
  ~0.15 s), a striker that hits a plate (swings down over 0.25 s into the event and back), an
  object that changes shape and colour (state change + pulse) — shapes circle/square/diamond/
  triangle, random colours, sizes and places; every object also lights up at its events (an impact
  flash decaying in ~0.2 s), a cue shared by all kinds that makes from-scratch training fast;
- sounds: the real drum samples in `assets/drums/` (LMMS sample library, GPL-2+) or synthesized
  hits (decaying tone, noise burst, click, chirp), with random gain per event;
- distractors: random backgrounds (gradients, blocky texture), 0-1 object moving smoothly with no
  events, pixel noise, a steady hum and noise floor in the audio.

`make_sounding_video` returns a `media.decode.DecodedVideo` (frame k shows time k / fps, audio
sample 0 at time 0) and the event times; `write_synthetic_folder` writes such videos as mp4 files.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from media.decode import DecodedVideo

DRUMS_DIR = Path(__file__).parent / "assets" / "drums"
SHAPES = ("circle", "square", "diamond", "triangle")
KINDS = ("bounce", "flash", "strike", "morph")


@lru_cache(maxsize=4)
def drum_samples(rate: int) -> tuple[np.ndarray, ...]:
    """The shipped drum hits, mono float32 at `rate`, cut to 0.5 s with a short fade-out."""
    import soundfile as sf

    out = []
    for p in sorted(DRUMS_DIR.glob("*.ogg")):
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
        x = data.mean(axis=1)
        if sr != rate:
            import librosa

            x = librosa.resample(x, orig_sr=sr, target_sr=rate)
        x = x[: int(0.5 * rate)].astype(np.float32)
        fade = min(len(x), int(0.05 * rate))
        x[len(x) - fade :] *= np.linspace(1, 0, fade, dtype=np.float32)
        x /= max(1e-6, float(np.abs(x).max()))
        out.append(x)
    return tuple(out)


def _synth_hit(rng: np.random.Generator, rate: int) -> np.ndarray:
    n = int(0.4 * rate)
    t = np.arange(n) / rate
    kind = rng.integers(4)
    if kind == 0:  # decaying tone
        f0 = rng.uniform(120, 1200)
        x = np.sin(2 * np.pi * f0 * t) * np.exp(-t / rng.uniform(0.03, 0.12))
    elif kind == 1:  # noise burst
        x = rng.standard_normal(n) * np.exp(-t / rng.uniform(0.02, 0.08))
    elif kind == 2:  # click
        x = np.zeros(n)
        k = int(rng.integers(8, 64))
        x[:k] = rng.standard_normal(k) * np.hanning(k)
    else:  # falling chirp
        f0, f1 = rng.uniform(300, 2000), rng.uniform(60, 200)
        ph = 2 * np.pi * np.cumsum(f1 + (f0 - f1) * np.exp(-t / 0.05)) / rate
        x = np.sin(ph) * np.exp(-t / rng.uniform(0.05, 0.15))
    x[: int(0.002 * rate)] *= np.linspace(0, 1, int(0.002 * rate))
    return (x / max(1e-6, np.abs(x).max())).astype(np.float32)


def _event_times(rng, duration: float, lo: float, hi: float) -> np.ndarray:
    t, out = rng.uniform(0.05, hi), []
    while t < duration:
        out.append(t)
        t += rng.uniform(lo, hi)
    return np.asarray(out, dtype=np.float64)


def _mask(shape: str, dx, dy, rx, ry):
    if shape == "circle":
        return (dx / rx) ** 2 + (dy / ry) ** 2 <= 1.0
    if shape == "square":
        return (np.abs(dx) <= rx) & (np.abs(dy) <= ry)
    if shape == "diamond":
        return np.abs(dx) / rx + np.abs(dy) / ry <= 1.0
    return (dy <= ry) & (dy >= -ry) & (np.abs(dx) <= (dy + ry) * rx / (2 * ry))  # triangle


def _color(rng, bright: bool | None = None) -> np.ndarray:
    c = rng.uniform(0, 255, 3)
    if bright is True:
        c = 128 + c / 2
    elif bright is False:
        c = c / 2
    return c


def _background(rng, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / max(1, size - 1)
    c0, c1 = _color(rng), _color(rng)
    th = rng.uniform(0, 2 * np.pi)
    g = (xx * np.cos(th) + yy * np.sin(th) + 1.5) / 3.0
    bg = c0[None, None] * (1 - g[..., None]) + c1[None, None] * g[..., None]
    if rng.random() < 0.6:  # blocky texture
        k = int(rng.integers(3, 9))
        tex = rng.uniform(-1, 1, (k, k, 3)) * rng.uniform(10, 50)
        reps = int(np.ceil(size / k))
        tex = np.kron(tex, np.ones((reps, reps, 1)))[:size, :size]
        bg = bg + tex
    return np.clip(bg, 0, 255)


def make_sounding_video(
    seed: int,
    duration: float = 8.0,
    size: int = 64,
    fps: float = 24.0,
    audio_rate: int = 16000,
) -> tuple[DecodedVideo, np.ndarray]:
    """One synthetic sounding video (deterministic in `seed`) and its sorted event times (seconds)."""
    rng = np.random.default_rng(seed)
    n_frames = int(round(duration * fps))
    n_samples = int(round(duration * audio_rate))
    times = np.arange(n_frames) / fps
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5

    bg = _background(rng, size)
    floor_y = size * rng.uniform(0.75, 0.92)
    n_streams = 1 if rng.random() < 0.7 else 2
    gaps = (0.3, 1.1) if n_streams == 1 else (0.45, 1.5)
    streams = []
    used = rng.permutation(len(KINDS))
    for s in range(n_streams):
        kind = KINDS[used[s]]
        ev = _event_times(rng, duration, *gaps)
        r = size * rng.uniform(0.11, 0.2)
        obj = dict(
            kind=kind,
            events=ev,
            cx=size * rng.uniform(0.2, 0.8),
            cy=size * rng.uniform(0.25, 0.6),
            r=r,
            shape=SHAPES[rng.integers(len(SHAPES))],
            color=_color(rng),
            palette=[_color(rng) for _ in range(4)],
            shapes=[SHAPES[i] for i in rng.permutation(len(SHAPES))],
            amp=size * rng.uniform(0.25, 0.45),
        )
        if kind in ("bounce", "strike"):
            bg[int(floor_y) : int(floor_y) + max(1, size // 32)] = _color(rng, bright=False)
        streams.append(obj)
    distractors = [
        dict(shape=SHAPES[rng.integers(4)], color=_color(rng), r=size * rng.uniform(0.04, 0.1),
             ax=size * rng.uniform(0.1, 0.35), ay=size * rng.uniform(0.05, 0.3), wx=rng.uniform(0.3, 1.2),
             wy=rng.uniform(0.3, 1.2), ph=rng.uniform(0, 6.3), cx=size * rng.uniform(0.3, 0.7), cy=size * rng.uniform(0.3, 0.7))
        for _ in range(int(rng.integers(0, 2)))
    ]
    noise_amp = rng.uniform(0, 3)

    frames = np.empty((n_frames, size, size, 3), dtype=np.uint8)
    for i, t in enumerate(times):
        img = bg.copy()
        for d in distractors:
            x = d["cx"] + d["ax"] * np.sin(2 * np.pi * d["wx"] * t + d["ph"])
            y = d["cy"] + d["ay"] * np.sin(2 * np.pi * d["wy"] * t + 2 * d["ph"])
            img[_mask(d["shape"], xx - x, yy - y, d["r"], d["r"])] = d["color"]
        for o in streams:
            ev = o["events"]
            k = int(np.searchsorted(ev, t, side="right"))  # events at or before t
            tp = ev[k - 1] if k > 0 else -np.inf
            tn = ev[k] if k < len(ev) else np.inf
            r, color, shape, cx, cy = o["r"], o["color"], o["shape"], o["cx"], o["cy"]
            rx = ry = r
            if o["kind"] == "bounce":
                a, b = (tp if np.isfinite(tp) else t - 0.6), (tn if np.isfinite(tn) else t + 0.6)
                g = max(b - a, 1e-3)
                h = 4 * (t - a) * (b - t) / g**2 * o["amp"] * min(1.0, g / 0.9)
                cy = floor_y - r - h
                if min(t - a, b - t) < 0.05:  # squash at contact
                    rx, ry = r * 1.3, r * 0.75
                    cy = floor_y - ry
            elif o["kind"] == "flash":
                b = np.exp(-(t - tp) / 0.2) if np.isfinite(tp) else 0.0
                color = color * (1 - b) + 255.0 * b
                rx = ry = r * (1 + 0.5 * b)
            elif o["kind"] == "strike":
                # the striker is down on the plate at the event (a jump), then lifts over 0.3 s and waits
                f = float(np.clip((t - tp) / 0.3, 0, 1)) if np.isfinite(tp) else 1.0
                plate_y = floor_y
                img[int(plate_y) - 2 : int(plate_y), int(cx - 2 * r) : int(cx + 2 * r)] = o["palette"][0]
                cy = plate_y - 2 - r - f * o["amp"]
                rx, ry = r * 1.5, r * 0.6
                shape = "square"
            else:  # morph
                shape = o["shapes"][k % 4]
                color = o["palette"][k % 4]
                p = np.exp(-(t - tp) / 0.12) if np.isfinite(tp) else 0.0
                rx = ry = r * (1 + 0.4 * p)
            if o["kind"] != "flash":  # every hit also lights the object up briefly (impact flash)
                b = np.exp(-(t - tp) / 0.2) if np.isfinite(tp) else 0.0
                color = color * (1 - 0.7 * b) + 255.0 * 0.7 * b
            img[_mask(shape, xx - cx, yy - cy, rx, ry)] = color
        if noise_amp > 0:
            img = img + rng.normal(0, noise_amp, img.shape)
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)

    audio = np.zeros(n_samples + audio_rate, dtype=np.float32)
    drums = drum_samples(audio_rate)
    for o in streams:
        hit = drums[rng.integers(len(drums))] if (drums and rng.random() < 0.6) else _synth_hit(rng, audio_rate)
        for t in o["events"]:
            a = int(round(t * audio_rate))
            audio[a : a + len(hit)] += hit * rng.uniform(0.5, 1.0)
    audio = audio[:n_samples]
    tt = np.arange(n_samples) / audio_rate
    audio += rng.uniform(0, 0.1) * np.sin(2 * np.pi * rng.uniform(50, 300) * tt).astype(np.float32)
    audio += rng.uniform(0, 0.03) * rng.standard_normal(n_samples).astype(np.float32)
    audio *= rng.uniform(0.3, 0.9) / max(1e-6, float(np.abs(audio).max()))

    events = np.sort(np.concatenate([o["events"] for o in streams]))
    source = {"synthetic_seed": int(seed), "kinds": [o["kind"] for o in streams], "width": size, "height": size, "fps": fps}
    return DecodedVideo(frames, float(fps), audio.astype(np.float32), int(audio_rate), source), events


def write_synthetic_folder(
    directory: str | Path, n: int, seed: int = 0, duration: float = 8.0, size: int = 128, fps: float = 24.0
) -> list[Path]:
    """Write n synthetic sounding videos `synth_<seed>.mp4` (+ `.json` with event times) into directory."""
    from media.encode import encode_mp4

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        s = seed + i
        video, events = make_sounding_video(s, duration=duration, size=size, fps=fps)
        p = directory / f"synth_{s:08d}.mp4"
        p.write_bytes(encode_mp4(video.frames, video.fps, video.audio, video.audio_rate))
        p.with_suffix(".json").write_text(json.dumps({"seed": s, "events": events.tolist(), **video.source}))
        paths.append(p)
    return paths
