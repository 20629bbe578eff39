"""Synchronization probability P_Sync with the sync classifier (AVSync15 supplement, Sec. 2.1 / 5.2).

Drops clips without clear synchronization cues (e.g. ambient sound), where shifted audio-video pairs
score about as high as the true pair.

A checkpoint says what it was trained on (config.json `training_data`). Only a classifier trained on real
footage ("vggss", "avsync15", ...) gives curation-grade scores; one trained on synthetic videos only (the
shipped `sync_classifier/checkpoints/small`) or of unknown provenance is a demonstration: it runs only with
`psync.allow_demo_checkpoint=true`, and its scores are then flagged as not curation-grade in every output,
as random weights are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from media.decode import DecodedVideo
from curate.models import ModelStage
from curate.records import Window
from curate.stage import StageUnavailable, in_range, register_stage

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CHECKPOINT = "sync_classifier/checkpoints/small"
NOT_CURATION_GRADE = ("synthetic", "unknown")
"""Training data of a sync classifier whose P_Sync is not a curation-grade score."""


def checkpoint_training_data(path: Path) -> str:
    """What a sync classifier checkpoint was trained on: its config.json `training_data` ("unknown" if absent)."""
    import json

    try:
        value = json.loads((Path(path) / "config.json").read_text()).get("training_data")
    except (OSError, ValueError):
        value = "vggss" if _authors_layout(Path(path)) else None  # the authors' released VGGSS classifier
    return str(value) if value else "unknown"


def _authors_layout(path: Path) -> bool:
    """Is `path` the authors' released classifier (audio_encoder/, video_encoder/, head/ modules)?"""
    from sync_classifier.asva import find_asva_modules

    try:
        find_asva_modules(path)
    except FileNotFoundError:
        return False
    return True


def resolve_sync_checkpoint(checkpoint: str | None) -> tuple[Path | None, str | None]:
    """(checkpoint dir, None) or (None, why not). A relative path is tried from the cwd, then the repo."""
    if not checkpoint:
        return None, "no checkpoint configured (psync.checkpoint is empty)"
    p = Path(checkpoint).expanduser()
    candidates = [p] if p.is_absolute() else [p, REPO_ROOT / p]
    for c in candidates:
        if (c / "config.json").is_file() and any((c / n).is_file() for n in ("model.safetensors", "model.pt")):
            return c, None
        if c.is_dir() and _authors_layout(c):  # loaded with preprocess "auto" -> the authors' cut ("asva")
            return c, None
    return None, (f"no sync classifier checkpoint (config.json + model.safetensors, or the authors' modules "
                  f"layout) at {checkpoint!r}")


@register_stage
@dataclass
class PSync(ModelStage):
    """From the middle of the clip, 2 s of audio and the matching 12 frames (6 fps). a2v: softmax over the
    av-sync scores phi of the true pair and the pairs with the audio shifted by -/+0.25 s, taken at the true
    pair; v2a: the same with the video shifted. Keep only if both >= 0.341 (1/3 = chance)."""

    name = "psync"
    columns = ("psync_a2v", "psync_v2a")
    requires = (("torch", "pip install torch"), ("sync_classifier.score", "the sync_classifier package of this repo"))

    checkpoint: str = SHIPPED_CHECKPOINT
    """Sync classifier directory (config.json + model.safetensors, `SyncClassifier.save_pretrained`)."""
    shift: float = 0.25
    min: float = 0.341
    device: str = "auto"
    dtype: str = "float32"
    batch_size: int = 32
    """Requests (clips) per forward pass; each request scores 3 + 3 shifted pairs."""
    preprocess: str = "auto"
    """How the clips are cut: "auto" (the checkpoint's: "asva" for the authors' released layout, else
    "native"), "native" (from the decoded video) or "asva" (from the source file as the authors' loader;
    needs the video's source["path"]). The curation's own filters (e.g. the amplitude one) are unaffected."""
    random_preset: str = "small"
    """Model size built with random init when no checkpoint is used (--allow-random-weights)."""
    allow_random_weights: bool = False
    allow_demo_checkpoint: bool = False
    """Run with a checkpoint that is not curation-grade (config.json `training_data` "synthetic" or "unknown",
    as the shipped one): a demonstration; its scores are flagged as not curation-grade in every output."""

    # what the weights are, set by check() on the driver (not parameters)
    checkpoint_path = None
    training_data = None
    curation_grade = True

    def check(self) -> None:
        super().check()
        if self.preprocess not in ("auto", "native", "asva"):
            raise StageUnavailable(f"stage 'psync': preprocess={self.preprocess!r}: expected auto, native or asva")
        if self.random_weights:
            self.checkpoint_path, self.training_data, self.curation_grade = None, "none (random init)", False
            return
        path, _ = resolve_sync_checkpoint(self.checkpoint)
        self.checkpoint_path = str(path)
        self.training_data = checkpoint_training_data(path)
        self.curation_grade = self.training_data not in NOT_CURATION_GRADE
        if not self.curation_grade and not self.allow_demo_checkpoint:
            raise StageUnavailable(
                f"stage 'psync': the sync classifier at {self.checkpoint!r} was trained on "
                f"{self.training_data!r} data (config.json training_data), so its P_Sync is not a curation-grade "
                "score. Provide one trained on real footage (psync.checkpoint=/path/to/dir, training_data e.g. "
                '"vggss"), or pass psync.allow_demo_checkpoint=true to run it as a demonstration (its scores '
                "psync_a2v, psync_v2a are then flagged as not curation-grade)."
            )

    def provenance(self) -> dict | None:
        """What the scores came from, recorded per run: checkpoint, its training data, curation grade."""
        if self.training_data is None:
            return None
        return {"checkpoint": self.checkpoint_path, "training_data": self.training_data,
                "curation_grade": bool(self.curation_grade)}

    def _weights_problem(self):
        _, problem = resolve_sync_checkpoint(self.checkpoint)
        return problem

    def _provide_hint(self):
        return (
            "a trained sync classifier directory at psync.checkpoint=/path/to/dir (written by "
            f"`python -m sync_classifier.train`; this repo ships one at {SHIPPED_CHECKPOINT})"
        )

    def _load(self, random):
        from sync_classifier.score import SyncScorer

        if random:
            from sync_classifier.config import PRESETS
            from sync_classifier.model import SyncClassifier

            model = SyncClassifier(PRESETS[self.random_preset]().model)
            self._scorer = SyncScorer.from_model(model, device=self._device, dtype=self._dtype, preprocess=self.preprocess)
        else:
            path, _ = resolve_sync_checkpoint(self.checkpoint)
            self._scorer = SyncScorer.from_pretrained(path, device=self._device, dtype=self._dtype, preprocess=self.preprocess)

    def score_batch(self, items: Sequence[tuple[DecodedVideo, Sequence[Window]]]) -> list[dict[str, np.ndarray]]:
        requests = [(video, 0.5 * (w.start + w.end)) for video, ws in items for w in ws]
        p = np.asarray(self._scorer.psync(requests, shift=self.shift, batch_size=self.batch_size), dtype=np.float64)
        p = p.reshape(len(requests), 2)
        out, i = [], 0
        for _, ws in items:
            out.append({"psync_a2v": p[i : i + len(ws), 0], "psync_v2a": p[i : i + len(ws), 1]})
            i += len(ws)
        return out

    def decide(self, scores):
        return in_range(scores.get("psync_a2v"), self.min, None, "psync_a2v") or in_range(
            scores.get("psync_v2a"), self.min, None, "psync_v2a"
        )
