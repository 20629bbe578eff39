"""Helpers of the evaluation tests (a module with its own name, so no other test folder's conftest shadows it):
synthetic sounding clips with known event times, mp4 writing, the tiny-network overrides."""

from __future__ import annotations

import numpy as np

def event_clip(event_frames, fps: float = 10.0, seconds: float = 3.0, size: int = 64, rate: int = 16000,
               audio_shift: float = 0.0, seed: int = 0):
    """A square that is still except for one 6-pixel step at each event frame, and a short noise burst at each
    event time (+ `audio_shift` seconds). Returns (frames uint8 [T, H, W, 3], audio float32 [N])."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fps))
    frames = np.full((n, size, size, 3), 30, np.uint8)
    x = 8
    events = set(int(e) for e in event_frames)
    for i in range(n):
        if i in events:
            x += 6 if x + 6 + 16 < size else -x + 8
        frames[i, 24:40, x : x + 16] = (220, 200, 60)
    audio = np.zeros(int(round(seconds * rate)), np.float32)
    burst = (rng.standard_normal(int(0.03 * rate)) * np.exp(-np.arange(int(0.03 * rate)) / (0.008 * rate))).astype(np.float32)
    for e in event_frames:
        a = int(round((e / fps + audio_shift) * rate))
        if 0 <= a < audio.size:
            m = min(burst.size, audio.size - a)
            audio[a : a + m] += 0.8 * burst[:m]
    return frames, audio


TINY = ["i3d.preset=tiny", "inception.preset=tiny", "vggish.preset=tiny", "passt.preset=tiny", "imagebind.preset=tiny"]


def write_mp4(path, frames, audio, fps, rate=16000):
    from media.encode import encode_mp4

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_mp4(frames, fps, audio, rate))
