"""Raw pixel difference (AVSync15 supplement): drops static clips (low) and chaotic / cut-heavy ones (high)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from curate.filters.sampling import uniform_frame_indices
from curate.media import DecodedVideo
from curate.records import Window
from curate.stage import Stage, in_range, register_stage


@register_stage
@dataclass
class PixelDiff(Stage):
    """Mean over 9 consecutive pairs of 10 uniformly sampled frames of mean |f_i - f_{i-1}|, RGB in [0, 1]."""

    name = "pixel_diff"
    columns = ("pixel_diff",)

    num_frames: int = 10
    min: float = 0.01
    max: float = 0.15

    def score(self, video: DecodedVideo, windows: Sequence[Window]) -> dict[str, np.ndarray]:
        out = np.empty(len(windows))
        for i, w in enumerate(windows):
            idx = uniform_frame_indices(video, w, self.num_frames)
            f = video.frames[idx].astype(np.int16)
            out[i] = np.abs(np.diff(f, axis=0)).mean() / 255.0
        return {"pixel_diff": out}

    def decide(self, scores):
        return in_range(scores.get("pixel_diff"), self.min, self.max, "pixel_diff")
