"""A sync "classifier" with no learning, as a floor for the learned ones: frame change against sound onsets.

    python bench/sync_change_matcher.py [--videos 32] [--seed 1000050000] [--real-media DIR] [--families ...] [--grid 4]

phi(a, v) is the correlation, over the 11 gaps between a clip's 12 frames, of
- the mean absolute difference between consecutive frames (at the `small` preset's 32 px), and
- the audio's spectral flux (positive differences of the log-mel frames, summed over mel bins) smoothed with a
  Gaussian of `--sigma` seconds and read at the middle of each frame gap.

With `--grid N` the frame difference is averaged in each cell of an N x N grid instead of the whole picture;
phi is the largest cell covariance with the normalised flux, over the norm of the whole picture's change (the
sounding object is somewhere: change elsewhere does not dilute it).

It is evaluated exactly like a checkpoint (`sync_classifier.evaluate.evaluate_model`: 31 offsets of 0.04 s,
both protocols) on held-out synthetic videos of every family. The default seed is the one
`bench/sync_lofo.py` tests its held-out families on, so the numbers sit beside that table's cells.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sync_classifier.config import small  # noqa: E402
from sync_classifier.data import EVAL_SEED_BASE  # noqa: E402
from sync_classifier.evaluate import evaluate_model, synthetic_videos  # noqa: E402
from sync_classifier.families import ALL_FAMILIES  # noqa: E402


class _CorrelationHead(nn.Module):
    """grid 1: correlation of the whole picture's change with the audio. grid > 1: for each cell, the covariance
    of its change with the (normalised) audio, over the norm of the whole picture's change; the best cell."""

    def __init__(self, grid: int):
        super().__init__()
        self.grid = grid

    def pairwise(self, a, v):
        a = F.normalize(a - a.mean(-1, keepdim=True), dim=-1, eps=1e-6)
        if self.grid == 1:
            v = F.normalize(v - v.mean(-1, keepdim=True), dim=-1, eps=1e-6)
            return a @ v.transpose(-1, -2)
        v = v.unflatten(-1, (self.grid**2, -1))  # [B, Kv, cells, gaps]
        v = v - v.mean(-1, keepdim=True)
        whole = v.sum(-2).norm(dim=-1).clamp_min(1e-6)  # [B, Kv]
        cov = torch.einsum("bit,bjct->bijc", a, v)
        return cov.max(-1).values / whole[:, None, :]


class ChangeMatcher(nn.Module):
    """encode_audio / encode_video / head.pairwise, as evaluate_model calls a SyncClassifier."""

    def __init__(self, spec, sigma: float, grid: int = 1):
        super().__init__()
        self.spec, self.grid = spec, grid
        self._device_anchor = nn.Parameter(torch.zeros(1), requires_grad=False)  # evaluate_model asks for a device
        self.head = _CorrelationHead(grid)
        hop = spec.frame_shift_ms / 1000
        t = torch.arange(spec.mel_frames) * hop + spec.frame_length_ms / 2000  # centre of each mel frame
        gaps = (torch.arange(1, spec.num_frames) - 0.5) / spec.fps  # between frame k-1 and frame k
        self.register_buffer("weights", torch.exp(-0.5 * ((t[None] - gaps[:, None]) / sigma) ** 2))

    def encode_audio(self, mel):
        m = mel[:, 0]
        flux = F.pad(F.relu(m[..., 1:] - m[..., :-1]).sum(1), (1, 0))
        return flux @ self.weights.T

    def encode_video(self, video):
        d = (video[:, :, 1:] - video[:, :, :-1]).abs().mean(dim=1)  # [N, gaps, H, W]
        if self.grid == 1:
            return d.mean(dim=(2, 3))
        d = F.adaptive_avg_pool2d(d, self.grid).flatten(2)  # [N, gaps, cells]
        return d.transpose(1, 2).flatten(1)  # cell-major: [N, cells * gaps]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=32, help="held-out videos per family")
    p.add_argument("--seed", type=int, default=EVAL_SEED_BASE + 50_000, help="first synthetic seed (>= 1e9: never trained on)")
    p.add_argument("--real-media", default="", help="real media folder mixed into the videos (as in training)")
    p.add_argument("--families", default=",".join(ALL_FAMILIES), help="comma-separated look families")
    p.add_argument("--sigma", type=float, default=0.05, help="seconds of Gaussian smoothing of the spectral flux")
    p.add_argument("--grid", type=int, default=1, help="cells per side: 1 = the whole picture, N = the best of N x N cells")
    a = p.parse_args(argv)
    if a.grid < 1:
        p.error("--grid must be >= 1")
    torch.set_num_threads(1)
    spec = small().model.spec
    model = ChangeMatcher(spec, a.sigma, a.grid)
    print(f"{'family':<12} {'asva a2v':>9} {'asva v2a':>9} {'all a2v':>8} {'all v2a':>8}   "
          f"({a.videos} videos each, no learning, {a.grid} x {a.grid} cells)")
    for fam in a.families.split(","):
        r = evaluate_model(model, synthetic_videos(a.videos, spec, seed=a.seed, family=fam, real_media=a.real_media))
        print(f"{fam:<12} {100 * r['asva']['acc_a2v']:8.1f}% {100 * r['asva']['acc_v2a']:8.1f}% "
              f"{100 * r['all']['acc_a2v']:7.1f}% {100 * r['all']['acc_v2a']:7.1f}%", flush=True)
    print(f"chance: asva {100 * r['asva']['chance']:.1f} %, all {100 * r['all']['chance']:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
