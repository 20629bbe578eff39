"""Semantic alignment with ImageBind (AVSync15 supplement): image-audio (IA) and image-text (IT) cosines.

Drops clips whose sound does not match what is seen (IA) or whose frames do not show their class (IT).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from curate.filters.sampling import uniform_frame_times
from media.decode import DecodedVideo
from curate.models import ModelStage
from curate.records import Window
from curate.stage import Stage, in_range, register_stage


@register_stage
@dataclass
class ImageBindAlign(ModelStage):
    """3 frames uniformly sampled from the clip (centres of 3 equal parts), for each the 2 s of audio
    centred on it (zero-padded beyond the track), and the class label as text. IA = min over the 3 of
    cos(image, audio), IT = min over the 3 of cos(image, text). Keep IA >= 0.15 and IT >= 0.22.
    A window without a label gets IT = None (dropped as `it_missing`)."""

    name = "imagebind"
    columns = ("ia", "it")
    requires = (("torch", "pip install torch"), ("einops", "pip install einops"), ("timm", "pip install timm"))

    checkpoint: str = ".checkpoints/imagebind_huge.pth"
    """imagebind_huge.pth: local path (the default is where the package itself downloads it, fetched from
    dl.fbaipublicfiles.com when missing) or an http(s) URL (cached under the torch hub dir)."""
    preset: str = "huge"
    """'huge' = the released model; 'tiny' = toy size, random init (tests)."""
    num_frames: int = 3
    audio_seconds: float = 2.0
    ia_min: float = 0.15
    it_min: float = 0.22
    device: str = "auto"
    dtype: str = "float32"
    batch_size: int = 32
    allow_random_weights: bool = False

    def check(self) -> None:
        Stage.check(self)  # the package first, then the weights (ModelStage.check)
        try:
            from curate.models.imagebind import import_imagebind

            import_imagebind()
        except Exception as e:
            from curate.stage import StageUnavailable

            raise StageUnavailable(
                f"stage 'imagebind' needs the `imagebind` package (pip install 'avsync[imagebind]', i.e. "
                f"imagebind-unofficial einops; CC-BY-NC-SA 4.0): {type(e).__name__}: {e}"
            ) from None
        self._resolve_weights()

    def _weights_problem(self):
        import os

        from curate.models.imagebind import DEFAULT_CHECKPOINT, resolve_checkpoint

        if self.preset != "huge" and (not self.checkpoint or os.path.normpath(self.checkpoint) == os.path.normpath(DEFAULT_CHECKPOINT)):
            return f"preset {self.preset!r} has no released weights (give a checkpoint file saved from it)"
        _, problem = resolve_checkpoint(self.checkpoint)
        return problem

    def _provide_hint(self):
        from curate.models.imagebind import IMAGEBIND_HUGE_URL

        return f"imagebind_huge.pth (from {IMAGEBIND_HUGE_URL}) at imagebind.checkpoint=/path/to/imagebind_huge.pth"

    def _load(self, random):
        from curate.models.imagebind import load_imagebind

        self._encoder = load_imagebind(self.preset, self.checkpoint, self._device, self._dtype, random=random)

    def score_batch(self, items: Sequence[tuple[DecodedVideo, Sequence[Window]]]) -> list[dict[str, np.ndarray]]:
        # distinct frames per video (overlapping windows share some), each with its audio clip; all
        # videos batched together; each distinct label encoded once
        frames, waves, plan, labels = [], [], [], {}
        half = self.audio_seconds / 2
        for video, ws in items:
            times = np.stack([uniform_frame_times(w, self.num_frames) for w in ws])
            idx = video.frame_index(times)
            uniq, inv = np.unique(idx, return_inverse=True)
            plan.append((len(frames), inv.reshape(idx.shape)))
            for i in uniq:
                t = i / video.fps
                frames.append(video.frames[i])
                waves.append(video.audio_slice(t - half, t + half))
            for w in ws:
                if w.label:
                    labels.setdefault(w.label, len(labels))
        enc = self._encoder
        img = enc.encode_images(frames, self.batch_size)
        aud = enc.encode_audio(np.stack(waves), items[0][0].audio_rate, self.batch_size)
        txt = enc.encode_text(list(labels), self.batch_size)
        ia_all = np.sum(img * aud, axis=-1)
        out = []
        for (offset, inv), (_, ws) in zip(plan, items):
            ia = ia_all[offset + inv].min(axis=1)
            it = np.full(len(ws), np.nan)
            for k, w in enumerate(ws):
                if w.label:
                    it[k] = float((img[offset + inv[k]] @ txt[labels[w.label]]).min())
            out.append({"ia": ia, "it": it})
        return out

    def decide(self, scores):
        return in_range(scores.get("ia"), self.ia_min, None, "ia") or in_range(scores.get("it"), self.it_min, None, "it")
