"""Fixtures: synthetic sounding clips with known event times, tiny feature extractors, generated-sample folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)  # 2 threads on a shared 2-core box thrash


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
    from curate.media import encode_mp4

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_mp4(frames, fps, audio, rate))


@pytest.fixture(scope="session")
def eval_data(tmp_path_factory):
    """Reference shard of 3 labelled 3 s segments; a generated folder: per segment one 2 s sample with a sidecar
    (the first synced, the second with its audio 0.5 s late, the third a copy of its reference clip), one sample
    without a sidecar, one unreadable mp4."""
    import json

    from curate.media import DecodedVideo
    from curate.shards import write_shard

    root = tmp_path_factory.mktemp("evaldata")
    events = [[4, 12, 22], [6, 14, 25], [3, 9, 18]]
    segs = []
    for i, ev in enumerate(events):
        f, a = event_clip(ev, fps=10.0, seconds=3.0, seed=i)
        segs.append((f"seg{i}", DecodedVideo(f, 10.0, a, 16000), {"label": "hitting drum"}))
    write_shard(root / "test-000000.tar", segs)
    gen = root / "gen"
    for i, ev in enumerate(events):
        f, a = event_clip([e for e in ev if e < 20], fps=10.0, seconds=2.0, seed=i, audio_shift=0.5 if i == 1 else 0.0)
        write_mp4(gen / f"seg{i}_s0.mp4", f, a, 10.0)
        (gen / f"seg{i}_s0.json").write_text(json.dumps({"reference": f"seg{i}", "clip_start": 0.0, "random_weights": True}))
    f, a = event_clip([5, 15], fps=10.0, seconds=2.0, seed=9)
    write_mp4(gen / "lonely.mp4", f, a, 10.0)
    (gen / "broken.mp4").write_bytes(b"not a video")
    return root
