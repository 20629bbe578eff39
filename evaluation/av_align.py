"""Weight-free audio-visual synchronisation: AV-Align, its precision/recall form, and AV-Align*.

- Audio events: librosa onsets (onset strength + `onset_detect`, default settings) on the audio resampled
  to 22.05 kHz, as the public AV-Align code gets them from `librosa.load`.
- Video events: local maxima of the flow trajectory. The trajectory has one value per frame: frame t
  holds the mean flow between frames t-1 and t, and frame 0 repeats frame 1's value (as the public code);
  a peak at frame t is the time t / fps.
- AV-Align (Yariv et al., TempoTokens): an audio onset "hits" when a video peak lies strictly within
  one frame of it (a 3-frame window); with c hits, AV-Align = c / (|A| + |V| - c). Two versions of the
  authors' code (`version`):
  - `current` (default; TempoTokens av_align.py at bf0b1e3, 2025): peaks with a mean flow below 0.1 px are
    ignored, and each video peak is matched at most once (onsets in time order take the first free peak in
    the window), so c <= min(|A|, |V|) and the score lies in [0, 1];
  - `2023` (the first public code, 34d9502): every local maximum is a peak, and a video peak may match many
    onsets, so the score exceeds 1 when |A| > |V| (that code also reads an undefined `n` in its peak finder;
    we read it as the trajectory length).
- AV-Align pr (paper 004, Eq. 14-16): p = share of audio onsets with a video peak within the window,
  r = share of video peaks with an audio onset within it; AV-Align = p r / (p + r - p r) (in [0, 1]).
- AV-Align* (JointDiT supplement B; lower is better): the flow trajectory and the onset-strength curve are
  each min-max normalised to [0, 1], values below 0.2 set to 0, and the score is the accumulated DTW cost
  (|x - y| per step, librosa's DTW) between the two sequences of different lengths. The supplement gives
  no code; the normalisation (min-max) and the unnormalised accumulated cost are our reading.
Undefined cases are NaN, never 0 or 1: no events in either modality (AV-Align), a flat curve (AV-Align*).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ONSET_RATE = 22050


VERSIONS = ("current", "2023")
PEAK_MIN = {"current": 0.1, "2023": 0.0}
"""the authors' smallest video peak (mean flow in pixels) per version"""


@dataclass
class AVAlignConfig:
    version: str = "current"
    """authors' code version: current (TempoTokens bf0b1e3: peaks >= 0.1 px, each peak matched once) | 2023 (34d9502)"""
    onset_rate: int = ONSET_RATE
    """Audio is resampled to this rate before onset detection (librosa.load's default, as the public code)."""
    flow_peak_min: float | None = None
    """Video peaks below this mean flow magnitude (pixels) are ignored (None = the version's: 0.1 current, 0 for 2023)."""
    star_floor: float = 0.2
    """AV-Align*: normalised curve values below this are set to 0 (JointDiT supplement B)."""

    def __post_init__(self):
        if self.version not in VERSIONS:
            raise ValueError(f"av_align.version must be one of {', '.join(VERSIONS)}, got {self.version!r}")

    @property
    def peak_min(self) -> float:
        return PEAK_MIN[self.version] if self.flow_peak_min is None else float(self.flow_peak_min)


@dataclass
class AVEvents:
    audio_onsets: np.ndarray
    """seconds"""
    video_peaks: np.ndarray
    """seconds"""
    onset_curve: np.ndarray
    """onset strength, one value per librosa frame (hop 512 at onset_rate)"""
    flow_curve: np.ndarray
    """flow trajectory, one value per video frame"""
    fps: float


def onset_curve_and_times(audio: np.ndarray, rate: int, onset_rate: int = ONSET_RATE) -> tuple[np.ndarray, np.ndarray]:
    """(onset strength envelope, onset times in seconds) of mono float audio at `rate`."""
    import librosa

    y = np.asarray(audio, np.float32)
    if rate != onset_rate:
        y = librosa.resample(y, orig_sr=rate, target_sr=onset_rate)
    env = librosa.onset.onset_strength(y=y, sr=onset_rate)
    frames = librosa.onset.onset_detect(onset_envelope=env, sr=onset_rate)
    return env.astype(np.float64), librosa.frames_to_time(frames, sr=onset_rate).astype(np.float64)


def flow_trajectory(magnitudes: np.ndarray) -> np.ndarray:
    """[T - 1] adjacent-pair flow means -> [T] per-frame trajectory (frame 0 repeats the first pair)."""
    m = np.asarray(magnitudes, np.float64)
    return np.concatenate([m[:1], m]) if m.size else m


def local_peaks(curve: np.ndarray, fps: float, minimum: float = 0.0) -> np.ndarray:
    """Times i / fps of strict interior local maxima of `curve` with a value of at least `minimum`."""
    c = np.asarray(curve, np.float64)
    if c.size < 3:
        return np.zeros(0)
    i = np.nonzero((c[1:-1] > c[:-2]) & (c[1:-1] > c[2:]) & (c[1:-1] >= minimum))[0] + 1
    return i / float(fps)


def detect_events(audio: np.ndarray, rate: int, magnitudes: np.ndarray, fps: float, cfg: AVAlignConfig = AVAlignConfig()) -> AVEvents:
    env, onsets = onset_curve_and_times(audio, rate, cfg.onset_rate)
    traj = flow_trajectory(magnitudes)
    return AVEvents(onsets, local_peaks(traj, fps, cfg.peak_min), env, traj, fps)


def _hits(a: np.ndarray, b: np.ndarray, window: float) -> np.ndarray:
    """For each time in a: is some time of b strictly within `window` of it."""
    if a.size == 0 or b.size == 0:
        return np.zeros(a.size, bool)
    return (np.abs(a[:, None] - b[None, :]) < window).any(axis=1)


def _matched_once(a: np.ndarray, v: np.ndarray, window: float) -> int:
    """Onsets (in the given order) each taking the first still-free video peak strictly within `window`."""
    free = np.ones(v.size, bool)
    c = 0
    for t in a:
        j = np.nonzero(free & (np.abs(v - t) < window))[0]
        if j.size:
            free[j[0]] = False
            c += 1
    return c


def av_align(audio_onsets: np.ndarray, video_peaks: np.ndarray, fps: float, version: str = "current") -> float:
    """c / (|A| + |V| - c), c = audio onsets with a video peak within one frame; NaN when both are empty.

    `current`: each video peak counts for one onset at most; `2023`: a peak may count for several."""
    a, v = np.asarray(audio_onsets, np.float64), np.asarray(video_peaks, np.float64)
    if version not in VERSIONS:
        raise ValueError(f"unknown AV-Align version {version!r}; known: {', '.join(VERSIONS)}")
    c = _matched_once(a, v, 1.0 / fps) if version == "current" else int(_hits(a, v, 1.0 / fps).sum())
    denom = a.size + v.size - c
    return float(c / denom) if denom > 0 else float("nan")


def av_align_pr(audio_onsets: np.ndarray, video_peaks: np.ndarray, fps: float) -> float:
    """p r / (p + r - p r) with p over audio onsets and r over video peaks (paper 004, Eq. 15-16)."""
    a, v = np.asarray(audio_onsets, np.float64), np.asarray(video_peaks, np.float64)
    if a.size == 0 and v.size == 0:
        return float("nan")
    if a.size == 0 or v.size == 0:
        return 0.0
    p = float(_hits(a, v, 1.0 / fps).mean())
    r = float(_hits(v, a, 1.0 / fps).mean())
    denom = p + r - p * r
    return float(p * r / denom) if denom > 0 else 0.0


def normalise_curve(x: np.ndarray, floor: float = 0.2) -> np.ndarray | None:
    """Min-max to [0, 1], values below `floor` -> 0; None for a flat (or empty) curve."""
    x = np.asarray(x, np.float64)
    if x.size == 0:
        return None
    lo, hi = float(x.min()), float(x.max())
    if not hi > lo:
        return None
    y = (x - lo) / (hi - lo)
    y[y < floor] = 0.0
    return y


def dtw_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Accumulated cost of the optimal DTW alignment of 1-D sequences x and y with cost |x_i - y_j|."""
    import librosa

    cost = np.abs(np.asarray(x, np.float64)[:, None] - np.asarray(y, np.float64)[None, :])
    acc = librosa.sequence.dtw(C=cost, backtrack=False)
    return float(acc[-1, -1])


def av_align_star(flow_curve: np.ndarray, onset_curve: np.ndarray, floor: float = 0.2) -> float:
    """DTW distance between the normalised flow trajectory and onset-strength curve (lower = better synced)."""
    f, o = normalise_curve(flow_curve, floor), normalise_curve(onset_curve, floor)
    if f is None or o is None:
        return float("nan")
    return dtw_distance(f, o)


def av_align_scores(audio: np.ndarray, rate: int, magnitudes: np.ndarray, fps: float, cfg: AVAlignConfig = AVAlignConfig()) -> dict:
    """All three scores of one clip (plus the event counts) from its audio and flow magnitudes."""
    ev = detect_events(audio, rate, magnitudes, fps, cfg)
    return {
        "av_align": av_align(ev.audio_onsets, ev.video_peaks, fps, cfg.version),
        "av_align_pr": av_align_pr(ev.audio_onsets, ev.video_peaks, fps),
        "av_align_star": av_align_star(ev.flow_curve, ev.onset_curve, cfg.star_floor),
        "n_audio_onsets": int(ev.audio_onsets.size),
        "n_video_peaks": int(ev.video_peaks.size),
    }


__all__ = ["VERSIONS", "AVAlignConfig", "AVEvents", "onset_curve_and_times", "flow_trajectory", "local_peaks", "detect_events",
           "av_align", "av_align_pr", "normalise_curve", "dtw_distance", "av_align_star", "av_align_scores"]
