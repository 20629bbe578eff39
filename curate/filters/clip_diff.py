"""CLIP feature difference (AVSync15 supplement): complements the pixel filter in semantic space and
catches shot changes PySceneDetect missed (high) and static content (low)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from curate.filters.sampling import uniform_frame_indices
from media.decode import DecodedVideo
from curate.models import ModelStage
from curate.records import Window
from curate.stage import in_range, register_stage


@register_stage
@dataclass
class ClipDiff(ModelStage):
    """Max over 9 consecutive pairs of the SAME 10 frames as `pixel_diff` of ||f_i - f_{i-1}||_2 between
    L2-normalised CLIP image features (so the score lies in [0, 2]). Keep 0.17 <= x <= 0.55."""

    name = "clip_diff"
    columns = ("clip_diff",)
    requires = (("torch", "pip install torch"), ("open_clip", "pip install open_clip_torch"))

    model: str = "ViT-B-32"
    """open_clip model name, `hf-hub:org/repo`, or `tiny` (random-init test model)."""
    pretrained: str = "openai"
    """open_clip pretrained tag (downloaded to the cache) or a local checkpoint file; empty = none."""
    num_frames: int = 10
    min: float = 0.17
    max: float = 0.55
    device: str = "auto"
    dtype: str = "float32"
    batch_size: int = 64
    """Frames per forward pass (frames of several videos are batched together)."""
    allow_random_weights: bool = False

    def _weights_problem(self):
        from curate.models.clip import weights_problem

        return weights_problem(self.model, self.pretrained)

    def _provide_hint(self):
        return (
            "a reachable Hugging Face hub / open_clip cache for the tag (clip_diff.pretrained=openai), "
            "or a local open_clip checkpoint file (clip_diff.pretrained=/path/to/open_clip_pytorch_model.bin)"
        )

    def _load(self, random):
        from curate.models.clip import load_clip

        self._encoder = load_clip(self.model, self.pretrained, self._device, self._dtype, random=random)

    def score_batch(self, items: Sequence[tuple[DecodedVideo, Sequence[Window]]]) -> list[dict[str, np.ndarray]]:
        # each video's distinct frames (overlapping windows share some) are encoded once, all videos batched
        frames, plan = [], []
        for video, ws in items:
            idx = np.stack([uniform_frame_indices(video, w, self.num_frames) for w in ws])
            uniq, inv = np.unique(idx, return_inverse=True)
            plan.append((len(frames), inv.reshape(idx.shape)))
            frames.extend(video.frames[i] for i in uniq)
        feats = self._encoder.encode(frames, self.batch_size)
        out = []
        for offset, inv in plan:
            f = feats[offset + inv]  # [windows, num_frames, D]
            d = np.linalg.norm(np.diff(f, axis=1), axis=-1)
            out.append({"clip_diff": d.max(axis=1)})
        return out

    def decide(self, scores):
        return in_range(scores.get("clip_diff"), self.min, self.max, "clip_diff")
