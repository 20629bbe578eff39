"""Shared fixtures: synthetic sounding videos written as curation shards, tiny random-init experts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from media.decode import DecodedVideo
from media.shards import write_shard

torch.set_num_threads(1)  # 2 threads on a shared 2-core box thrash (25x slower measured)


def sounding_video(seed: int, seconds: float = 2.5, fps: float = 14.0, size: int = 48, rate: int = 16000) -> DecodedVideo:
    """A square bouncing left/right; a click (decaying tone) each time it hits a wall."""
    rng = np.random.default_rng(seed)
    n = int(seconds * fps)
    period = int(rng.integers(6, 12))
    color = rng.integers(60, 255, size=3)
    bg = rng.integers(0, 60, size=3)
    frames = np.empty((n, size, size, 3), np.uint8)
    frames[:] = bg
    audio = np.zeros(int(seconds * rate), np.float32)
    freq = float(rng.uniform(300, 1500))
    t = np.arange(int(0.08 * rate)) / rate
    click = (np.sin(2 * np.pi * freq * t) * np.exp(-t * 40)).astype(np.float32)
    for i in range(n):
        ph = (i % (2 * period)) / period
        x = int((ph if ph <= 1 else 2 - ph) * (size - 12))
        frames[i, 18:30, x : x + 12] = color
        if i % period == 0:
            a = int(i / fps * rate)
            m = min(len(click), len(audio) - a)
            audio[a : a + m] += 0.8 * click[:m]
    return DecodedVideo(frames, fps, audio, rate)


@pytest.fixture(scope="session")
def shard_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    write_shard(d / "train-000000.tar", [(f"clip{i}", sounding_video(i), {"label": "bounce"}) for i in range(4)])
    return d


@pytest.fixture(scope="session")
def tiny_experts(tmp_path_factory):
    from train.experts import write_tiny_experts

    return write_tiny_experts(tmp_path_factory.mktemp("experts"), seed=0)


@pytest.fixture(scope="session")
def tiny_parts(tiny_experts):
    from train.experts import build_jointdit, load_experts

    vunet, aunet, frozen = load_experts(*tiny_experts)
    torch.manual_seed(0)
    model = build_jointdit(vunet, aunet, frozen, "tiny")
    return model, frozen


def randomize_joint(model, std: float = 0.05, seed: int = 0):
    """Non-zero AdaLN gates / image projection so cross-modal paths are active (they are zero at init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in list(model.joint_blocks.parameters()) + list(model.audio_image_proj.parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def write_png(path, value: int = 128, size: int = 16) -> None:
    """A flat grey `size` x `size` RGB png (the samplers' first-frame input)."""
    import av
    import numpy as np

    with av.open(str(path), "w", format="image2") as c:
        s = c.add_stream("png", rate=1)
        s.width, s.height, s.pix_fmt = size, size, "rgb24"
        for p in s.encode(av.VideoFrame.from_ndarray(np.full((size, size, 3), value, np.uint8), format="rgb24")):
            c.mux(p)
        for p in s.encode():
            c.mux(p)


def count_shard_reads(monkeypatch, tally) -> None:
    """Route every shard read of `media.stream` (its `open_shard`) through a file object that calls
    `tally(url, bytes)` for each read, so a test can count what a reader really read."""
    import media.stream

    class CountingFile:
        def __init__(self, url):
            self.url, self.f = url, open(url, "rb")

        def read(self, n=-1):
            b = self.f.read(n)
            tally(self.url, len(b))
            return b

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(media.stream, "open_shard", CountingFile)
