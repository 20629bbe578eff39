"""The AVSync15 authors' input preprocessing (lzhangbj/ASVA at 6587938), reimplemented in torch /
torchvision / PyAV (`preprocess=asva`; `native` is this project's own decode-to-224 path).

Sync classifier inputs as their test loader (`avsync/data.py`, used by `avsync_eval.py`) makes them:

- decoding: full-size RGB frames and the audio track's codec frames, each with its presentation time
  (pts, s). Their torchvision `VideoReader(..., "video_reader")` is emulated with PyAV: `seek(t)` then
  next frames returns the frames with pts >= t (`AsvaReader`); the frame on screen at t is skipped
  when it starts before t.
- clip times: for each clip start s, 13 times s + k / 6 (k = 0..12); the first is moved +0.0001 s and
  the last -0.0001 s. Frames: one decode from the first clip's first time up to the last clip's 12th
  time; each target time takes the nearest decoded frame (ties: the earlier).
- frames: uint8 -> float / 255, short side resized to 224 (bicubic, antialiased; torchvision's size
  rule truncates the long side), centre crop 224, CLIP mean / std.
- audio: every codec frame whose pts lies in [first time, last time] of a clip; each frame's
  interleaved [samples, channels] buffer is reshaped (not transposed) to [channels, samples] as their
  `.view(c, t)` does, so for stereo the "channels" are interleaved halves of the frame; concatenated,
  resampled to 16 kHz (torchaudio's hann-windowed sinc, `sinc_resample`), centre-cropped to 32000
  samples, the mean over all channels removed, Kaldi fbank of channel 0 (`audio.log_mel`), padded to
  204 frames, (x + 4.268) / 9.138.

RelSync / AlignSync inputs as their evaluation (`avgen/evaluations`) makes them (`relsync_clip`):
from the clip start the first frame at or after each time s + k / 6 (the last repeated if the video
ends), the long side trimmed to a square (int()), bilinear (antialiased) to 256, centre crop, then
`Resize((224, 224))` bicubic and CLIP mean / std; audio: codec frames with pts in [s, s + 2], the
same resample and mel.
"""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import ClipSpec

PREPROCESS_MODES = ("native", "asva")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TIME_EPS = 1e-4
"""Their loader moves a clip's first time later and its last time earlier by this (s)."""


# -- audio ------------------------------------------------------------------------------------------
def sinc_resample(wave: torch.Tensor, orig: int, new: int, lowpass_filter_width: int = 6,
                  rolloff: float = 0.99) -> torch.Tensor:
    """[..., T] at `orig` Hz -> [..., ceil(T * new / orig)] at `new` Hz: band-limited interpolation with
    a Hann-windowed sinc, as `torchaudio.functional.resample` with its defaults (kernel in the input's
    dtype; output length ceil(new * T / orig))."""
    orig, new = int(orig), int(new)
    if orig == new:
        return wave
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    base = min(o, n) * rolloff
    width = math.ceil(lowpass_filter_width * o / base)
    dtype = wave.dtype
    idx = torch.arange(-width, width + o, dtype=dtype)[None, None] / o
    t = torch.arange(0, -n, -1, dtype=dtype)[:, None, None] / n + idx
    t = (t * base).clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0, dtype=dtype), t.sin() / t) * window * (base / o)
    lead, length = wave.shape[:-1], wave.shape[-1]
    x = F.pad(wave.reshape(-1, length), (width, width + o))
    y = F.conv1d(x[:, None], kernel, stride=o).transpose(1, 2).reshape(x.shape[0], -1)
    target = int(math.ceil(n * length / o))
    return y[..., :target].reshape(*lead, -1)


def frames_to_channels(frames: list[np.ndarray | torch.Tensor]) -> torch.Tensor:
    """Codec frames, each float [samples, channels] interleaved, -> [channels, total] the way their loader
    does it: each buffer reshaped (`view(c, t)`, not transposed) and the frames concatenated."""
    out = []
    for f in frames:
        f = torch.as_tensor(np.asarray(f, dtype=np.float32) if not torch.is_tensor(f) else f.float())
        t, c = f.shape
        out.append(f.contiguous().view(c, t))
    return torch.cat(out, dim=1)


def asva_mel(wave: torch.Tensor, rate: int, spec: ClipSpec = ClipSpec()) -> torch.Tensor:
    """[channels, T] at `rate` -> normalised log-mel [1, n_mels, mel_frames] (their
    `waveform_to_melspectrogram` after the resample): 16 kHz, centre crop to duration * 16000, the mean
    over all channels removed, fbank of channel 0."""
    from .audio import log_mel

    x = torch.as_tensor(wave, dtype=torch.float32)
    if x.ndim == 1:
        x = x[None]
    x = sinc_resample(x, rate, spec.audio_rate)
    n = spec.num_samples
    start = (x.shape[1] - n) // 2 if x.shape[1] > n else 0
    x = x[:, start:start + n]
    x = x - x.mean()
    return log_mel(x[0], spec, remove_mean=False)


# -- frames -----------------------------------------------------------------------------------------
def nearest_frames(pts: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the decoded frame nearest each target time (the earlier one on a tie), as np.argmin."""
    pts = np.asarray(pts, dtype=np.float64)
    return np.abs(np.asarray(targets, dtype=np.float64)[..., None] - pts).argmin(axis=-1)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def _as_float(frames) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [0, 1]."""
    x = torch.as_tensor(np.ascontiguousarray(frames)) if not torch.is_tensor(frames) else frames
    return x.permute(0, 3, 1, 2).float() / 255.0


def asva_frames(frames, size: int = 224) -> torch.Tensor:
    """uint8 RGB [N, H, W, 3] (full size) -> float [3, N, size, size]: short side to `size` (bicubic,
    antialiased, torchvision's truncating size rule), centre crop, CLIP mean / std."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    x = _as_float(frames)
    x = TF.resize(x, size, interpolation=InterpolationMode.BICUBIC, antialias=True)
    x = _normalise(TF.center_crop(x, size))
    return x.permute(1, 0, 2, 3).contiguous()


def relsync_frames(frames, load_size: int = 256, size: int = 224) -> torch.Tensor:
    """uint8 RGB [N, H, W, 3] -> float [3, N, size, size] as their evaluation: square crop (long side
    trimmed, int()), bilinear (antialiased) to load_size, centre crop, bicubic to (size, size), CLIP."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    x = _as_float(frames)
    h, w = x.shape[-2:]
    if h <= w:
        tw = int(h / 1.0)
        x = x[..., (w - tw) // 2:(w - tw) // 2 + tw]
    else:
        th = int(w * 1.0)
        x = x[..., (h - th) // 2:(h - th) // 2 + th, :]
    x = TF.center_crop(TF.resize(x, load_size, interpolation=InterpolationMode.BILINEAR, antialias=True), load_size)
    x = TF.resize(x, [size, size], interpolation=InterpolationMode.BICUBIC, antialias=True)
    x = _normalise(TF.center_crop(x, size))
    return x.permute(1, 0, 2, 3).contiguous()


# -- decoding (their VideoReader emulated with PyAV) ------------------------------------------------
class AsvaReader:
    """PyAV stand-in for their torchvision `VideoReader`: `video_from(t, until)` / `audio_from(t, until)`
    yield (pts seconds, data) for the frames with t <= pts <= until, in decode order. Video data: uint8
    RGB [H, W, 3] at full size; audio data: float32 [samples, channels] interleaved."""

    def __init__(self, path):
        """`path`: a file path, an object-storage URI (s3://, gs://, ...: ranged reads) or a seekable binary
        file object (e.g. an mp4 from a shard in a BytesIO)."""
        import av

        self._file = path if hasattr(path, "read") else None
        self.path = getattr(path, "name", "<in-memory file>") if self._file is not None else str(path)
        self._av = av
        with self._open() as c:
            if not c.streams.video:
                raise ValueError(f"{self.path}: no video stream")
            self.has_audio = bool(c.streams.audio)
            v = c.streams.video[0]
            self.video_duration = float(v.duration * v.time_base) if v.duration else float(c.duration or 0) / 1e6
            if self.has_audio:
                a = c.streams.audio[0]
                self.audio_rate = int(a.rate)
                self.audio_duration = float(a.duration * a.time_base) if a.duration else float(c.duration or 0) / 1e6

    def _open(self):
        if self._file is not None:
            self._file.seek(0)
            return self._av.open(self._file)
        from media import storage

        if storage.is_uri(self.path):
            return self._av.open(storage.open_read(self.path))
        return self._av.open(self.path)

    def _frames(self, kind: str, t: float, until: float):
        with self._open() as c:
            s = c.streams.video[0] if kind == "video" else c.streams.audio[0]
            s.thread_type = "AUTO" if kind == "video" else s.thread_type
            tb = s.time_base
            back = max(t - 1.0, 0.0)
            if back > 0:
                c.seek(int(Fraction(back).limit_denominator(10**6) / tb), stream=s, backward=True, any_frame=False)
            for frame in c.decode(s):
                if frame.pts is None:
                    continue
                pts = float(frame.pts * tb)
                if pts > until:
                    break
                if pts < t:
                    continue
                yield pts, frame

    def video_from(self, t: float, until: float):
        for pts, f in self._frames("video", t, until):
            yield pts, f.to_ndarray(format="rgb24")

    def audio_from(self, t: float, until: float):
        if not self.has_audio:
            raise ValueError(f"{self.path}: no audio stream")
        for pts, f in self._frames("audio", t, until):
            yield pts, audio_frame_interleaved(f)


def audio_frame_interleaved(frame) -> np.ndarray:
    """A PyAV AudioFrame -> float32 [samples, channels] (as torchvision's decoder hands it out: packed
    float, integer formats scaled to [-1, 1))."""
    a = frame.to_ndarray()
    ch = len(frame.layout.channels)
    fmt = frame.format
    if a.dtype.kind in "iu":
        half = float(2 ** (8 * a.dtype.itemsize - 1))
        a = a.astype(np.float64) / half if a.dtype.kind == "i" else (a.astype(np.float64) - half) / half
    a = a.astype(np.float32)
    if fmt.is_planar:
        return np.ascontiguousarray(a.T)  # [channels, samples] -> [samples, channels]
    return a.reshape(-1, ch)


def clip_times(starts, spec: ClipSpec = ClipSpec()) -> np.ndarray:
    """[K, num_frames + 1] times of their loader (first +1e-4 s, last -1e-4 s)."""
    t = np.asarray(starts, dtype=np.float64)[:, None] + np.arange(spec.num_frames + 1)[None, :] / spec.fps
    t[:, 0] += TIME_EPS
    t[:, -1] -= TIME_EPS
    return t


def clips_from_decoded(video: list[tuple[float, np.ndarray]], audio: list[tuple[float, np.ndarray]], audio_rate: int,
                       times: np.ndarray, spec: ClipSpec = ClipSpec()) -> tuple[torch.Tensor, torch.Tensor]:
    """Their multi-clip loader on decoded (pts, data) frames of a stream (any superset of the span):
    video [K, 3, F, 224, 224], mel [K, 1, n_mels, mel_frames]. Video: the frames their reader returns
    after seek(first time) up to the last clip's last frame time (pts >= first time: a frame starting
    earlier is never used, even when nearer); audio: codec frames with pts in each clip's span."""
    video = [(p, d) for p, d in video if times[0, 0] <= p <= times[-1, -2]]
    if not video:
        raise ValueError("no video frames in the clips' span")
    pts = np.array([p for p, _ in video])
    idx = nearest_frames(pts, times[:, :-1])
    used = np.unique(idx)
    x = asva_frames(np.stack([video[i][1] for i in used]), spec.image_size)  # [3, U, s, s]
    where = {int(u): j for j, u in enumerate(used)}
    sel = torch.tensor([where[int(i)] for i in idx.reshape(-1)])
    v = x[:, sel].reshape(3, times.shape[0], times.shape[1] - 1, spec.image_size, spec.image_size).permute(1, 0, 2, 3, 4)
    mels = []
    for k in range(times.shape[0]):
        parts = [d for p, d in audio if times[k, 0] <= p <= times[k, -1]]
        if parts:
            wave = frames_to_channels(parts)
        else:  # the audio track ends before the clip (a shifted P_Sync clip at a file's end): silence, as a
            wave = torch.zeros(1, int(round(spec.duration * audio_rate)))  # native decode fills lost audio
        mels.append(asva_mel(wave, audio_rate, spec))
    return v.contiguous(), torch.stack(mels)


def asva_clips(path: str | Path, starts, spec: ClipSpec = ClipSpec()) -> tuple[torch.Tensor, torch.Tensor]:
    """Sync classifier inputs of the clips starting at `starts` (s) of a file, as their test loader."""
    times = clip_times(np.sort(np.asarray(starts, dtype=np.float64)), spec)
    order = np.argsort(np.argsort(np.asarray(starts, dtype=np.float64), kind="stable"), kind="stable")
    r = AsvaReader(path)
    video = list(r.video_from(times[0, 0], times[-1, -2]))
    audio = list(r.audio_from(times[0, 0], times[-1, -1]))
    v, m = clips_from_decoded(video, audio, r.audio_rate, times, spec)
    return v[order], m[order]


def relsync_from_decoded(video: list[tuple[float, np.ndarray]], audio: list[tuple[float, np.ndarray]], audio_rate: int,
                         start: float, spec: ClipSpec = ClipSpec(), load_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Their evaluation's clip from `start` on decoded (pts, data) frames (video from `start`, audio with
    pts in [start, start + duration]): video [3, F, 224, 224], mel [1, n_mels, mel_frames]."""
    step = 1.0 / spec.fps
    picked, target = [], start
    for p, d in video:
        if p > start + spec.duration + step / 2:
            break
        if p >= target:
            picked.append(d)
            target += step
        if len(picked) == spec.num_frames:
            break
    if not picked:
        raise ValueError(f"no video frame at or after {start:.3f} s")
    picked += [picked[-1]] * (spec.num_frames - len(picked))
    parts = [d for p, d in audio if start <= p <= start + spec.duration]
    if not parts:
        raise ValueError(f"no audio frames between {start:.3f} s and {start + spec.duration:.3f} s")
    return relsync_frames(np.stack(picked), load_size, spec.image_size), asva_mel(frames_to_channels(parts), audio_rate, spec)


def relsync_clip(path: str | Path, start: float | None = None, spec: ClipSpec = ClipSpec(),
                 load_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """RelSync / AlignSync inputs of one clip of a file as their evaluation loads it; `start` None = the
    middle clip of min(video, audio duration)."""
    r = AsvaReader(path)
    if start is None:
        start = (min(r.video_duration, r.audio_duration if r.has_audio else r.video_duration) - spec.duration) / 2
    video = list(r.video_from(start, start + spec.duration + 0.5 / spec.fps))
    audio = list(r.audio_from(start, start + spec.duration))
    return relsync_from_decoded(video, audio, r.audio_rate, start, spec, load_size)


def resolve_preprocess(requested: str, spec: ClipSpec) -> str:
    """"auto" -> the checkpoint's own (spec.preprocess); otherwise `requested` (checked)."""
    mode = spec.preprocess if requested in ("", "auto") else requested
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"preprocess={requested!r}: expected auto, {' or '.join(PREPROCESS_MODES)}")
    return mode


def with_preprocess(spec: ClipSpec, mode: str) -> ClipSpec:
    return replace(spec, preprocess=mode)


__all__ = ["PREPROCESS_MODES", "sinc_resample", "frames_to_channels", "asva_mel", "nearest_frames", "asva_frames",
           "relsync_frames", "AsvaReader", "audio_frame_interleaved", "clip_times", "clips_from_decoded", "asva_clips",
           "relsync_from_decoded", "relsync_clip", "resolve_preprocess", "with_preprocess"]
