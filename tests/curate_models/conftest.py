"""Fixtures for the model-backed filters: short synthetic sounding videos (a square that jumps on every
click) built directly as DecodedVideo objects, their 3 s windows, and tiny random-init stage params."""

from __future__ import annotations

import numpy as np
import pytest

from media.decode import DecodedVideo
from curate.records import VideoInput, Window

RATE = 16000


def make_video(seconds: float = 5.0, fps: float = 12.0, size=(72, 96), seed: int = 0) -> DecodedVideo:
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fps))
    h, w = size
    frames = np.full((n, h, w, 3), 40, np.uint8)
    frames[..., 2] = 90 + 30 * seed
    audio = (0.01 * rng.standard_normal(int(round(seconds * RATE)))).astype(np.float32)
    pos = 0
    for k in range(n):
        t = k / fps
        if k % 6 == 0:  # an event every 0.5 s: the square jumps and a click sounds
            pos = int(rng.integers(0, w - 16))
            a = int(t * RATE)
            audio[a : a + 400] += 0.8 * np.hanning(400).astype(np.float32)
        frames[k, 20:36, pos : pos + 16] = (230, 200, 40)
    return DecodedVideo(frames=frames, fps=fps, audio=np.clip(audio, -1, 1), audio_rate=RATE)


def make_windows(video: DecodedVideo, video_id: str, label: str | None, length: float = 3.0, stride: float = 0.5) -> list[Window]:
    starts = np.arange(0.0, video.duration - length + 1e-6, stride)
    return [Window(video_id, f"/data/{video_id}.mp4", 0, float(s), float(s) + length, label) for s in starts]


@pytest.fixture(scope="session")
def videos():
    """Two videos (5 s and 4 s) with their windows; the second video's windows have no label."""
    v1, v2 = make_video(5.0, seed=1), make_video(4.0, seed=2, size=(64, 64))
    return [(v1, make_windows(v1, "vidA_000001", "dog barking")), (v2, make_windows(v2, "vidB_000002", None))]


@pytest.fixture
def fresh_items(videos):
    """VideoItems as `curate.video_task` passes them between stages (fresh windows each test)."""
    from curate.video_task import VideoItem

    items = []
    for v, ws in videos:
        fresh = [Window(w.video_id, w.path, w.scene, w.start, w.end, w.label) for w in ws]
        items.append(VideoItem(VideoInput(fresh[0].path, fresh[0].video_id, fresh[0].label), video=v, windows=fresh))
    return items


@pytest.fixture
def tiny_params():
    """Stage params for tiny random-init models (no weights exist for them: random init is explicit)."""
    return {k: dict(v) for k, v in TINY_PARAMS.items()}


TINY_PARAMS = {
    "clip_diff": {"model": "tiny", "pretrained": "", "allow_random_weights": True, "device": "cpu", "batch_size": 16},
    "imagebind": {"preset": "tiny", "checkpoint": "", "allow_random_weights": True, "device": "cpu", "batch_size": 16},
    "psync": {"checkpoint": "", "random_preset": "tiny", "allow_random_weights": True, "device": "cpu", "batch_size": 8},
}
