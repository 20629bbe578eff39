"""The records that flow through curation: an input video, a 3 s window, a merged segment, and the flags
that say which score columns are not curation-grade."""

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


@dataclass
class ScoreFlags:
    """Score columns that are not curation-grade, and why: made by random-init models (`random`), or by a
    model whose training data makes it a demonstration, e.g. a sync classifier trained on synthetic videos
    only (`not_curation_grade`). `models`: per model stage, what its weights are (checkpoint, training data,
    curation grade), recorded per run."""

    random: list[str] = field(default_factory=list)
    not_curation_grade: list[str] = field(default_factory=list)
    models: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def of(cls, stages) -> "ScoreFlags":
        flags = cls()
        for st in stages:
            if st.random_weights:
                flags.random.extend(st.columns)
            elif getattr(st, "curation_grade", True) is False:
                flags.not_curation_grade.extend(st.columns)
            prov = st.provenance() if hasattr(st, "provenance") else None
            if prov:
                flags.models[st.name] = prov
        return flags

    def add(self, other: "ScoreFlags") -> "ScoreFlags":
        """Union (a run's stages and the per-video records of earlier runs of the same output)."""
        self.random = sorted(set(self.random) | set(other.random))
        self.not_curation_grade = sorted(set(self.not_curation_grade) | set(other.not_curation_grade))
        for k, v in other.models.items():
            self.models.setdefault(k, v)
        return self

    def restrict(self, columns) -> "ScoreFlags":
        cols = set(columns)
        return ScoreFlags([c for c in self.random if c in cols], [c for c in self.not_curation_grade if c in cols],
                          dict(self.models))

    @property
    def flagged(self) -> list[str]:
        return sorted(set(self.random) | set(self.not_curation_grade))


def ms(t: float) -> int:
    return int(round(t * 1000))


def stable_fraction(text: str) -> float:
    """A deterministic number in [0, 1) from a string (split assignment, shard order)."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:12], 16) / float(1 << 48)
