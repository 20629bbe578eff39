"""Scoring of clips in batches: every network called once per batch of clips, each clip decoded once.

`score_clips` takes a batch of `ClipInput` (a protocol clip's frames and audio, plus what the paired metrics
need) and returns one record per clip (weight-free scores, ImageBind scores, phi, PaSST logits); the
distribution features (I3D, Inception, VGGish) go to a `Collected` of that side. `Batcher` gathers clips and
scores them `chunk` at a time, calling back each clip's owner with its record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class ClipInput:
    key: str
    frames: np.ndarray
    """uint8 [T, H, W, 3] at the protocol's rate and size"""
    audio: np.ndarray
    """float32 mono, the same span"""
    fps: float
    rate: int
    label: str | None = None
    image: np.ndarray | None = None
    """conditioning image (uint8 [H, W, 3]) for IB-IV / IB-IA"""
    sync_frames: np.ndarray | None = None
    """12 frames at 6 fps for the sync classifier"""
    sync_audio: np.ndarray | None = None
    sync_inputs: tuple | None = None
    """ready sync classifier inputs (video [3, T, H, W], mel [1, n_mels, frames]) when the scorer's preprocessing
    cuts clips from the file itself (preprocess=asva, the authors' RelSync / AlignSync cut)"""


@dataclass
class Collected:
    """Features of one side (generated or reference) for the set metrics."""

    i3d: list = field(default_factory=list)
    inception: list = field(default_factory=list)
    vggish: list = field(default_factory=list)
    melception: list = field(default_factory=list)


def _by_shape(arrays: list[np.ndarray]) -> list[list[int]]:
    """Indices grouped by array shape (a batch needs equal shapes), in first-seen order."""
    groups: dict = {}
    for i, a in enumerate(arrays):
        groups.setdefault(a.shape, []).append(i)
    return list(groups.values())


def score_clips(clips: list[ClipInput], metrics: set[str], models, skip_first: bool, coll: Collected, text_cache: dict,
                av_cfg) -> list[dict]:
    """One record per clip; features appended to `coll`. `models` is a runner.Models."""
    from evaluation.av_align import av_align_scores
    from evaluation.motion import flow_magnitudes, motion_score

    recs: list[dict] = [{} for _ in clips]
    if metrics & {"motion", "av_align", "av_align_pr", "av_align_star"}:
        for c, rec in zip(clips, recs):
            if c.frames.shape[0] >= 2:
                mags = flow_magnitudes(c.frames)
                rec["motion"] = motion_score(mags)
                rec.update(av_align_scores(c.audio, c.rate, mags, c.fps, av_cfg))
    ex = models.extractors
    scored = [c.frames[1:] if skip_first and len(c.frames) > 1 else c.frames for c in clips]
    if "i3d" in ex:
        for idx in _by_shape([c.frames for c in clips]):
            coll.i3d.append(ex["i3d"](np.stack([clips[i].frames for i in idx])))
    if "inception" in ex:
        for idx in _by_shape(scored):
            coll.inception.append(ex["inception"](np.concatenate([scored[i] for i in idx])))
    if "vggish" in ex:
        coll.vggish.append(ex["vggish"]([c.audio for c in clips]))
    if "melception" in ex:
        coll.melception.append(ex["melception"]([c.audio for c in clips], clips[0].rate))
    if "passt" in ex:
        logits = ex["passt"]([c.audio for c in clips], clips[0].rate)
        for rec, lg in zip(recs, logits):
            rec["_passt_logits"] = lg
    if models.imagebind is not None:
        _imagebind(clips, recs, models.imagebind, skip_first, text_cache, models.batch_size)
    if models.scorer is not None:
        have = [i for i, c in enumerate(clips) if c.sync_frames is not None]
        for idx in _by_shape([clips[i].sync_frames for i in have]):
            idx = [have[i] for i in idx]
            phi = models.scorer.phi(np.stack([clips[i].sync_audio for i in idx]), np.stack([clips[i].sync_frames for i in idx]),
                                    batch_size=models.batch_size)
            for i, p in zip(idx, phi):
                recs[i]["phi"] = float(p)
        ready = [i for i, c in enumerate(clips) if c.sync_inputs is not None]
        if ready:
            import torch

            phi = models.scorer.phi_inputs(torch.stack([clips[i].sync_inputs[0] for i in ready]),
                                           torch.stack([clips[i].sync_inputs[1] for i in ready]), batch_size=models.batch_size)
            for i, p in zip(ready, phi):
                recs[i]["phi"] = float(p)
    return recs


def _imagebind(clips, recs, enc, skip_first, text_cache, batch_size):
    from evaluation.imagebind_metrics import clip_scores

    frames = [f for c in clips for f in c.frames]
    femb = enc.encode_images(frames, batch_size)
    rate = clips[0].rate
    two = np.zeros((len(clips), 2 * rate), np.float32)  # the adapter takes 2 s clips
    for i, c in enumerate(clips):
        n = min(two.shape[1], c.audio.size)
        two[i, :n] = c.audio[:n]
    aemb = enc.encode_audio(two, rate, batch_size)
    new = sorted({c.label for c in clips if c.label and c.label not in text_cache})
    if new:
        for label, e in zip(new, enc.encode_text(new)):
            text_cache[label] = e
    with_image = [i for i, c in enumerate(clips) if c.image is not None]
    iemb = dict(zip(with_image, enc.encode_images([clips[i].image for i in with_image], batch_size))) if with_image else {}
    start = 0
    for i, (c, rec) in enumerate(zip(clips, recs)):
        fe = femb[start : start + len(c.frames)]
        start += len(c.frames)
        rec.update(clip_scores(fe, aemb[i], text_cache.get(c.label) if c.label else None, iemb.get(i), skip_first))
        rec["_ia_first"] = float(fe[0] @ aemb[i])


class Batcher:
    """Collects (clip, callback) pairs and scores them `chunk` at a time; `flush()` scores what is left."""

    def __init__(self, chunk: int, score: Callable[[list[ClipInput]], list[dict]]):
        self.chunk, self.score, self.pending = max(1, chunk), score, []

    def add(self, clip: ClipInput, done: Callable[[dict], None]) -> None:
        self.pending.append((clip, done))
        if len(self.pending) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        for (_, done), rec in zip(pending, self.score([c for c, _ in pending])):
            done(rec)


__all__ = ["ClipInput", "Collected", "score_clips", "Batcher"]
