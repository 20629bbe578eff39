"""Fixtures for sync_classifier tests: tiny models, synthetic sounding videos, the shipped checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from media.decode import DecodedVideo
from sync_classifier.config import tiny
from sync_classifier.model import SyncClassifier

SHIPPED_SMALL = Path(__file__).resolve().parents[2] / "sync_classifier" / "checkpoints" / "small"


@pytest.fixture(autouse=True)
def _torch_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_cfg():
    return tiny()


@pytest.fixture
def tiny_model(tiny_cfg):
    torch.manual_seed(0)
    return SyncClassifier(tiny_cfg.model)


@pytest.fixture(scope="session")
def small_checkpoint() -> Path:
    if not (SHIPPED_SMALL / "model.safetensors").exists():
        pytest.fail(f"shipped checkpoint missing: {SHIPPED_SMALL}")
    return SHIPPED_SMALL


def _ramp_video(duration: float = 8.0, fps: float = 24.0, size: int = 16, rate: int = 16000) -> DecodedVideo:
    """Frame k is filled with k % 256; audio sample n is n / rate (seconds): easy to check cut positions."""
    n = int(round(duration * fps))
    frames = np.broadcast_to((np.arange(n) % 256).astype(np.uint8)[:, None, None, None], (n, size, size, 3)).copy()
    audio = (np.arange(int(duration * rate)) / rate).astype(np.float32)
    return DecodedVideo(frames, fps, audio, rate, {})


@pytest.fixture
def ramp_video():
    """Factory: ramp_video(duration=8.0, fps=24.0, size=16) -> DecodedVideo with checkable frames/audio."""
    return _ramp_video
