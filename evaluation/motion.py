"""Optical flow between adjacent frames, and the motion score built on it.

The flow is OpenCV's Farneback flow with the parameters of the public AV-Align code (pyramid scale 0.5,
3 levels, window 15, 3 iterations, poly_n 5, poly_sigma 1.2) on grayscale frames at the size they are
given; each adjacent pair gives the mean flow magnitude in pixels. The motion score (SVD, JointDiT
supplement B) is the sum of these means over the clip, so it grows with clip length and resolution:
compare scores only under one protocol. The same curve feeds AV-Align (`evaluation.av_align`), so a clip's
flow is computed once.
"""

from __future__ import annotations

import numpy as np

FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


def flow_magnitudes(frames: np.ndarray) -> np.ndarray:
    """uint8 [T, H, W, 3] RGB -> float64 [T - 1]: mean Farneback flow magnitude between frames t and t+1."""
    import cv2

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] < 2:
        raise ValueError(f"need at least 2 RGB frames [T, H, W, 3], got shape {frames.shape}")
    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    out = np.empty(len(gray) - 1, np.float64)
    for i in range(1, len(gray)):
        flow = cv2.calcOpticalFlowFarneback(gray[i - 1], gray[i], None, **FARNEBACK)
        out[i - 1] = float(np.mean(np.hypot(flow[..., 0], flow[..., 1])))
    return out


def motion_score(magnitudes: np.ndarray) -> float:
    """Sum over adjacent frame pairs of the mean flow magnitude (pixels)."""
    return float(np.sum(magnitudes))


__all__ = ["FARNEBACK", "flow_magnitudes", "motion_score"]
