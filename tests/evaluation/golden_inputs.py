"""The hand-made inputs of the evaluation golden checks, made from fixed rules and seeded generators (the
fixture script in tests/fixtures/eval_reference/ and the tests build the same arrays; only outputs are stored).
numpy, torch and the standard library only, so the authors' environment can import it too."""

from __future__ import annotations

import zlib

import numpy as np

FPS = 10.0
RATE = 16000
SECONDS = 3.0
AV_CLIPS = ("synced", "two_onsets_one_peak", "small_motion")


def _click(rng, rate):
    n = int(0.03 * rate)
    return (rng.standard_normal(n) * np.exp(-np.arange(n) / (0.006 * rate))).astype(np.float32)


def av_clip(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 frames [30, 48, 64, 3] at FPS, mono float32 audio at RATE) of one hand-made clip:
    - synced: a block jumps at frames 5, 15, 22, a click at each jump;
    - two_onsets_one_peak: jumps at frames 5 and 15; clicks at 0.5, 1.45 and 1.55 s (two onsets within one
      frame of the 1.5 s peak);
    - small_motion: a big jump at frame 8 and a faint one-pixel drift of a small dim patch at frames 16 and 24
      (flow peaks under 0.1 px), clicks at 0.8, 1.6 and 2.4 s."""
    rng = np.random.default_rng(AV_CLIPS.index(name))
    n, h, w = int(SECONDS * FPS), 48, 64
    yy, xx = np.mgrid[0:h, 0:w]
    base = (40 + 20 * np.sin(xx / 5.0) + 15 * np.cos(yy / 4.0)).astype(np.float32)
    jumps = {"synced": [5, 15, 22], "two_onsets_one_peak": [5, 15], "small_motion": [8]}[name]
    clicks = {"synced": [0.5, 1.5, 2.2], "two_onsets_one_peak": [0.5, 1.45, 1.55], "small_motion": [0.8, 1.6, 2.4]}[name]
    frames = np.empty((n, h, w, 3), np.uint8)
    x, px = 6, 40
    for i in range(n):
        if i in jumps:
            x += 9
        if name == "small_motion" and i in (16, 24):
            px += 1
        img = np.repeat(base[..., None], 3, axis=2).copy()
        img[14:30, x : x + 14] = (230, 190, 70)
        if name == "small_motion":
            img[34:38, px : px + 4] = img[34:38, px : px + 4] + 12
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    audio = (0.002 * rng.standard_normal(int(SECONDS * RATE))).astype(np.float32)
    for t in clicks:
        c = _click(rng, RATE)
        a = int(round(t * RATE))
        audio[a : a + c.size] += 0.8 * c
    return frames, audio


def fid_frames() -> dict:
    """uint8 RGB frames: 'square' [2, 64, 64, 3] and 'wide' [2, 32, 64, 3] (the GreatestHits 1:2 aspect)."""
    rng = np.random.default_rng(22)
    out = {}
    for name, (h, w) in {"square": (64, 64), "wide": (32, 64)}.items():
        yy, xx = np.mgrid[0:h, 0:w]
        smooth = 128 + 90 * np.sin(xx / 6.0)[..., None] * np.cos(yy / 9.0)[..., None] * np.array([1.0, 0.6, -0.8])
        noise = rng.integers(-40, 41, (2, h, w, 3))
        out[name] = np.clip(smooth[None] + noise, 0, 255).astype(np.uint8)
    return out


def mel_audio() -> np.ndarray:
    """2 s of float32 audio at 22050 Hz (SpecVQGAN's rate): two tones, a click train and a little noise."""
    rng = np.random.default_rng(7)
    t = np.arange(int(2 * 22050)) / 22050
    y = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1870 * t) * (t > 1.0)
    y[::2205] += 0.9
    return (y + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def melception_input() -> np.ndarray:
    """float64 [2, 80, 96]: a normalised-mel-like input of Melception."""
    return np.random.default_rng(309).standard_normal((2, 80, 96))


def seeded_state_dict(sd: dict) -> dict:
    """Every float tensor from a CPU generator seeded by crc32(key): BN running_var in [0.5, 1.5], BN/affine
    weights 1 + 0.1 N, biases / running_mean 0.1 N, other weights N / sqrt(fan_in)."""
    import torch

    out = {}
    for k, v in sd.items():
        if not v.is_floating_point():
            out[k] = v.clone()
            continue
        g = torch.Generator().manual_seed(zlib.crc32(k.encode()))
        r = torch.randn(v.shape, generator=g, dtype=torch.float64)
        if k.endswith("running_var"):
            t = 0.5 + torch.rand(v.shape, generator=g, dtype=torch.float64)
        elif k.endswith(("bias", "running_mean")):
            t = 0.1 * r
        elif v.ndim == 1:
            t = 1 + 0.1 * r
        else:
            t = r / np.sqrt(max(1, v[0].numel()))
        out[k] = t.to(v.dtype)
    return out
