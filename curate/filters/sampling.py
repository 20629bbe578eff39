"""Which frames and audio of a window a filter looks at (shared so every filter samples the same way)."""

from __future__ import annotations

import numpy as np

from media.decode import DecodedVideo
from curate.records import Window


def uniform_frame_indices(video: DecodedVideo, window: Window, n: int) -> np.ndarray:
    """`n` frame indices spread uniformly over the window's frames, first and last included."""
    i0 = int(round(window.start * video.fps))
    i1 = max(i0, int(round(window.end * video.fps)) - 1)
    i1 = min(i1, video.num_frames - 1)
    return np.round(np.linspace(i0, i1, n)).astype(np.int64)


def uniform_frame_times(window: Window, n: int) -> np.ndarray:
    """Times (s) of `n` frames spread uniformly over the window (centres of n equal parts)."""
    length = window.end - window.start
    return window.start + (np.arange(n) + 0.5) * length / n
