"""Test protocols: which clips of each video are scored, at what frame rate, length and size.

- `avsync15` (AVSync15 main paper Sec. 3.2 and the authors' evaluation code): 3 clips per test video, at the
  head, the centre and the tail; 12 frames at 6 fps (2 s), 256 x 256 (128 x 256 with `dataset=greatesthits`,
  as the authors' TheGreatestHits scripts); FID, IA, IT and P_Align on frames 2..N (frame 1 is the
  conditioning image), FVD on all frames. FID frames go in as the authors' code does it: [0, 1] float,
  resized to 229 x 229 bicubic antialiased (aspect ratio not kept), centre crop 229, no resize inside Inception.
- `jointdit` (JointDiT Sec. 4.1, supplement): one random 2 s clip per test video (seeded), 14 frames at 7 fps,
  256 x 256; with `dataset=greatesthits` one random 2 s clip in each 10 s segment of a test video (a last
  segment shorter than the clip is dropped); 5 / 3 / 3 generated samples per test image on AVSync15 /
  GreatestHits / Landscape (checked and reported, not enforced: a short count is a warning in metrics.json);
  IA, IT, P_Align (and FID, which JointDiT does not report) on frames 2..N: frame 1 is the conditioning
  image; FVD on all frames. FID input: pytorch-fid's (299 x 299 bilinear). FAD: Melception (SpecVQGAN).
- `none`: clips used as they are (all frames, source rate and size; a generated clip and its reference then
  need equal sizes for FVD).
Frames are taken on the clip's time grid (frame k at start + k / fps, nearest earlier source frame), resized to
cover the target size (bicubic, antialiased) and centre-cropped; the audio is the same [start, start + n/fps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from media.decode import DecodedVideo


@dataclass(frozen=True)
class Protocol:
    name: str
    fps: float | None
    num_frames: int | None
    size: tuple[int, int] | None
    """(height, width) or None to keep the source size"""
    positions: tuple[str, ...]
    """reference clips per video: 'head', 'centre', 'tail', 'random' or 'all' (the whole segment)"""
    skip_first_frame: bool
    """FID, IA, IT (and P_Align) leave out frame 1, the conditioning image"""
    samples_per_reference: dict
    fid_input: str = "299-bilinear"
    """how FID frames enter Inception: 299-bilinear (pytorch-fid) | 229-bicubic (ASVA's compute_fid.py)"""
    fad_network: str = "vggish"
    """FAD features: vggish | melception"""
    segment_seconds: float | None = None
    """with positions ('segment',): one random clip in each segment of this length"""

    @property
    def clip_seconds(self) -> float | None:
        return None if self.fps is None or self.num_frames is None else self.num_frames / self.fps


PROTOCOLS = {
    "avsync15": Protocol("avsync15", 6.0, 12, (256, 256), ("head", "centre", "tail"), True, {"avsync15": 3},
                         fid_input="229-bicubic"),
    "jointdit": Protocol("jointdit", 7.0, 14, (256, 256), ("random",), True,
                         {"avsync15": 5, "greatesthits": 3, "landscape": 3}, fad_network="melception"),
    "none": Protocol("none", None, None, None, ("all",), False, {}),
}
DATASETS = ("avsync15", "greatesthits", "landscape")


def protocol_for(name: str, dataset: str = "avsync15") -> Protocol:
    """The protocol `name` as it applies to `dataset` (the GreatestHits variants of both papers)."""
    import dataclasses

    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    p = PROTOCOLS[name]
    if dataset == "greatesthits" and name == "avsync15":
        return dataclasses.replace(p, size=(128, 256))
    if dataset == "greatesthits" and name == "jointdit":
        return dataclasses.replace(p, positions=("segment",), segment_seconds=10.0)
    return p


def clip_starts(duration: float, protocol: Protocol, rng: np.random.Generator) -> list[float]:
    """Start times (seconds) of the protocol's reference clips in a video of `duration` seconds."""
    length = protocol.clip_seconds
    if length is None:
        return [0.0]
    if protocol.positions == ("segment",):
        seg = float(protocol.segment_seconds)
        out = []
        for k in range(max(1, int(np.ceil(duration / seg - 1e-9)))):
            a, b = k * seg, min((k + 1) * seg, duration)
            if b - a + 1e-9 >= length or k == 0:
                out.append(a + (float(rng.uniform(0, b - a - length)) if b - a > length else 0.0))
        return out
    room = max(0.0, duration - length)
    out = []
    for pos in protocol.positions:
        out.append({"head": 0.0, "centre": room / 2, "tail": room}.get(pos, float(rng.uniform(0, room)) if room > 0 else 0.0))
    return out


def resize_cover(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [T, H, W, 3] -> [T, h, w, 3]: bicubic antialiased resize to cover (h, w), centre crop."""
    import torch
    import torch.nn.functional as F

    t, h, w, _ = frames.shape
    th, tw = size
    if (h, w) == (th, tw):
        return frames
    s = max(th / h, tw / w)
    nh, nw = max(th, round(h * s)), max(tw, round(w * s))
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    top, left = (nh - th) // 2, (nw - tw) // 2
    x = x[:, :, top : top + th, left : left + tw]
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def cut(video: DecodedVideo, start: float, fps: float | None, num_frames: int | None,
        size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray, float]:
    """(frames uint8 [T, h, w, 3], audio float32 for the same span, fps) of one clip of `video`."""
    if fps is None:
        i0 = int(video.frame_index(start))
        frames = video.frames[i0:]
        fps = video.fps
        n = frames.shape[0]
    else:
        n = num_frames if num_frames is not None else max(1, int((video.duration - start) * fps))
        frames = video.frames[video.frame_index(start + np.arange(n) / fps)]
    if size is not None:
        frames = resize_cover(frames, size)
    audio = video.audio_slice(start, start + n / fps)
    return np.ascontiguousarray(frames), audio, float(fps)


__all__ = ["Protocol", "PROTOCOLS", "DATASETS", "protocol_for", "clip_starts", "resize_cover", "cut"]
