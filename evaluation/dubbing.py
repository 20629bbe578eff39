"""Synchronised sounding versions of real footage, for checking sync metrics where no synced real video exists.

Real footage with its own synchronised sound (hits, footsteps, speech on camera) is what a sync metric should
be checked on; the media at hand (a film trailer with music and effects) has sound that is mostly not caused
by what is shown, so no metric can rank its "unshifted" audio first. `dub_events` makes the closest honest
substitute: it keeps the real frames and places real one-shot sounds (e.g. recorded drum hits) at the
footage's own visual events, under the original track at a low level:

- `events="motion"`: prominent peaks of the footage's optical-flow trajectory (prominence above the
  trajectory's interquartile range, at least `min_gap` s apart): moments where something visibly moves most.
- `events="cuts"`: the scene cuts that `curate.scenes.detect_scenes` finds.

Because the motion events are found with the same optical flow that AV-Align reads, a metric ranking the
dubbed footage's unshifted audio first shows that its machinery (onset detection, peak matching, DTW) works
on real images and real sounds; it does not show agreement with human judgement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from media.decode import DecodedVideo


def load_one_shots(paths: Sequence[str | Path], rate: int, peak: float = 0.8) -> list[np.ndarray]:
    """Mono one-shot sounds at `rate`, each scaled to `peak`."""
    import librosa

    out = []
    for p in paths:
        y, _ = librosa.load(str(p), sr=rate, mono=True)
        m = float(np.abs(y).max()) if y.size else 0.0
        if m > 0:
            out.append((y / m * peak).astype(np.float32))
    if not out:
        raise ValueError("no usable one-shot sounds")
    return out


def motion_events(video: DecodedVideo, min_gap: float = 0.5) -> np.ndarray:
    """Times (s) of prominent peaks of the flow trajectory of `video`."""
    from scipy.signal import find_peaks

    from evaluation.av_align import flow_trajectory
    from evaluation.motion import flow_magnitudes

    traj = flow_trajectory(flow_magnitudes(video.frames))
    q75, q25 = np.percentile(traj, [75, 25])
    peaks, _ = find_peaks(traj, prominence=max(float(q75 - q25), 1e-6), distance=max(1, int(round(min_gap * video.fps))))
    return peaks / video.fps


def cut_events(video: DecodedVideo) -> np.ndarray:
    """Times (s) of the scene cuts of `video`."""
    from curate.scenes import detect_scenes

    return np.array([start for start, _ in detect_scenes(video)[1:]], np.float64)


def dub_events(video: DecodedVideo, sounds: Sequence[np.ndarray], events: str = "motion", background: float = 0.1,
               min_gap: float = 0.5) -> tuple[DecodedVideo, np.ndarray]:
    """(`video` with a new audio track, event times): the sounds in turn at each event, plus the original
    track scaled by `background` (0: none). `sounds` must be mono at `video.audio_rate`."""
    times = motion_events(video, min_gap) if events == "motion" else cut_events(video) if events == "cuts" else None
    if times is None:
        raise ValueError(f"events must be 'motion' or 'cuts', not {events!r}")
    n = int(round(video.duration * video.audio_rate))
    audio = np.zeros(n, np.float32)
    if video.audio is not None and background > 0:
        m = min(n, video.audio.shape[0])
        audio[:m] = background * video.audio[:m]
    for i, t in enumerate(times):
        s = sounds[i % len(sounds)]
        a = int(round(t * video.audio_rate))
        k = min(s.shape[0], n - a)
        if k > 0:
            audio[a:a + k] += s[:k]
    dubbed = DecodedVideo(video.frames, video.fps, audio, video.audio_rate, dict(video.source, dubbed=events))
    return dubbed, times


__all__ = ["load_one_shots", "motion_events", "cut_events", "dub_events"]
