"""Scene cuts with PySceneDetect's detectors, fed the frames we already decoded (no second decode)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from media.decode import DecodedVideo


@dataclass
class SceneConfig:
    detector: str = "content"
    """`content` (ContentDetector, the paper's choice), `adaptive`, `threshold`, or `none` (one scene)."""
    threshold: float = 27.0
    min_scene_len: float = 0.6
    """Minimum scene length in seconds (PySceneDetect's default is 15 frames ~ 0.6 s at 25 fps)."""
    luma_only: bool = False
    detect_width: int = 160
    """Frames are subsampled by an integer stride to about this width before detection (speed; 0 = full)."""


def _make_detector(cfg: SceneConfig, min_len_frames: int):
    from scenedetect import detectors

    if cfg.detector == "content":
        return detectors.ContentDetector(threshold=cfg.threshold, min_scene_len=min_len_frames, luma_only=cfg.luma_only)
    if cfg.detector == "adaptive":
        return detectors.AdaptiveDetector(min_scene_len=min_len_frames, luma_only=cfg.luma_only)
    if cfg.detector == "threshold":
        return detectors.ThresholdDetector(threshold=cfg.threshold, min_scene_len=min_len_frames)
    raise ValueError(f"unknown scene detector {cfg.detector!r} (content, adaptive, threshold, none)")


def _frame_num(tc) -> int:
    for attr in ("frame_num", "get_frames"):
        v = getattr(tc, attr, None)
        if v is not None:
            return int(v() if callable(v) else v)
    return int(tc)


def detect_scenes(video: DecodedVideo, cfg: SceneConfig = SceneConfig()) -> list[tuple[float, float]]:
    """Scenes as (start, end) seconds covering the whole video, in order."""
    n = video.num_frames
    if cfg.detector == "none" or n < 2:
        return [(0.0, video.duration)]
    from scenedetect.common import FrameTimecode

    min_len = max(1, int(round(cfg.min_scene_len * video.fps)))
    det = _make_detector(cfg, min_len)
    cuts: list[int] = []
    fps = video.fps
    tc = None
    step = max(1, video.frames.shape[2] // cfg.detect_width) if cfg.detect_width else 1
    for i in range(n):
        tc = FrameTimecode(i, fps=fps)
        bgr = np.ascontiguousarray(video.frames[i, ::step, ::step, ::-1])
        cuts.extend(_frame_num(c) for c in det.process_frame(tc, bgr))
    post = getattr(det, "post_process", None)
    if post is not None and tc is not None:
        try:
            cuts.extend(_frame_num(c) for c in (post(tc) or []))
        except TypeError:
            cuts.extend(_frame_num(c) for c in (post(n - 1) or []))
    bounds = [0] + sorted({c for c in cuts if 0 < c < n}) + [n]
    return [(bounds[i] / fps, bounds[i + 1] / fps) for i in range(len(bounds) - 1)]
