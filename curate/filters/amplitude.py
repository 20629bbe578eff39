"""Audio amplitude (AVSync15 supplement): drops silent or near-silent clips."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from media.decode import DecodedVideo
from curate.records import Window
from curate.stage import Stage, in_range, register_stage


@register_stage
@dataclass
class AudioAmplitude(Stage):
    """Max |x| of the clip's waveform (mono mix at the working rate, float in [-1, 1])."""

    name = "amplitude"
    columns = ("amplitude",)

    min: float = 0.03

    def score(self, video: DecodedVideo, windows: Sequence[Window]) -> dict[str, np.ndarray]:
        out = np.empty(len(windows))
        for i, w in enumerate(windows):
            a = video.audio_slice(w.start, w.end)
            out[i] = float(np.abs(a).max()) if a.size else 0.0
        return {"amplitude": out}

    def decide(self, scores):
        return in_range(scores.get("amplitude"), self.min, None, "amplitude")
