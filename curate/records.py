"""The records that flow through curation: an input video, a 3 s window, a merged segment."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass
class VideoInput:
    path: str
    video_id: str
    label: str | None = None
    split: str | None = None
    """`train` / `test` from the CSV; None = assigned by hash at the end."""


@dataclass
class Window:
    video_id: str
    path: str
    scene: int
    start: float
    end: float
    label: str | None = None
    scores: dict[str, float | None] = field(default_factory=dict)
    drop_reason: str | None = None
    """First failing stage's reason in pipeline order (None = kept)."""
    drop_reasons: list[str] = field(default_factory=list)
    """Every failing stage's reason (for re-tuning and the report)."""

    @property
    def kept(self) -> bool:
        return self.drop_reason is None

    @property
    def window_id(self) -> str:
        return f"{self.video_id}-{ms(self.start):08d}"


@dataclass
class Segment:
    video_id: str
    path: str
    scene: int
    start: float
    end: float
    label: str | None
    split: str
    windows: list[Window]
    kept: bool = True
    drop_reason: str | None = None

    @property
    def segment_id(self) -> str:
        return f"{self.video_id}-{ms(self.start):08d}-{ms(self.end):08d}"

    def mean_scores(self) -> dict[str, float | None]:
        cols = sorted({k for w in self.windows for k in w.scores})
        out: dict[str, float | None] = {}
        for c in cols:
            vals = [w.scores.get(c) for w in self.windows if w.scores.get(c) is not None]
            out[c] = float(sum(vals) / len(vals)) if vals else None
        return out


def ms(t: float) -> int:
    return int(round(t * 1000))


def stable_fraction(text: str) -> float:
    """A deterministic number in [0, 1) from a string (split assignment, shard order)."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:12], 16) / float(1 << 48)
