"""Scoring API used by curation (P_Sync filter) and metrics (RelSync, AlignSync).

    scorer = SyncScorer.from_pretrained("sync_classifier/checkpoints/small")
    phi = scorer.phi(audio, video)                    # av-sync scores [B]
    p = scorer.psync([(decoded_video, t_center), ...]) # [n, 2] = (p_a2v, p_v2a)

Preprocessing (`preprocess`): "native" cuts clips from a DecodedVideo (frame on screen, 16 kHz mono);
"asva" cuts them from the source file as the authors' code does (sync_classifier/asva_preprocess.py);
"auto" (default) takes the checkpoint's: "asva" for the authors' released layout, else "native".

P_Sync (supplement Eq. 4, spec 1.7): around the center, spec.duration s of audio and spec.num_frames
frames at spec.fps. a2v: phi of the true pair and of the pairs with the audio shifted by -shift and
+shift; P = softmax over the three phi (no temperature) taken at the true pair. v2a: the same with
the video shifted. Windows leaving the video are zero-padded (audio) / edge-clamped (frames).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from media.decode import DecodedVideo

from .audio import log_mel
from .config import ClipSpec
from .data import clip_audio, clip_frames, fit_frames
from .frames import clip_tensor
from .model import SyncClassifier


class SyncScorer:
    training_data: str
    """What the classifier was trained on (config.json `training_data`; "unknown" if not stated)."""
    curation_grade: bool
    """True only for a classifier trained on real data (not "synthetic" / "unknown")."""

    preprocess: str
    """"native" or "asva" (see the module doc)."""

    def __init__(self, model: SyncClassifier, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 preprocess: str = "auto"):
        from .asva_preprocess import resolve_preprocess

        self.model = model.to(device=device, dtype=dtype).eval()
        self.device, self.dtype = device, dtype
        self.spec: ClipSpec = model.spec
        self.preprocess = resolve_preprocess(preprocess, model.spec)
        self.training_data = str(getattr(model, "training_data", "unknown") or "unknown")
        self.curation_grade = self.training_data not in ("synthetic", "unknown")

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
                        preprocess: str = "auto") -> "SyncScorer":
        """A checkpoint folder or a file inside it (this project's format or the authors' `modules`)."""
        return cls(SyncClassifier.from_pretrained(path), device=device, dtype=dtype, preprocess=preprocess)

    @classmethod
    def from_model(cls, model: SyncClassifier, device="cpu", dtype=torch.float32, preprocess: str = "auto") -> "SyncScorer":
        return cls(model, device=device, dtype=dtype, preprocess=preprocess)

    @torch.no_grad()
    def phi_inputs(self, video: torch.Tensor, mel: torch.Tensor, batch_size: int = 32) -> np.ndarray:
        """phi [B] of ready model inputs: video float [B, 3, T, H, W] (normalised), mel [B, 1, n_mels, frames]."""
        a = torch.cat([self.model.encode_audio(m.to(self.device, self.dtype)) for m in mel.split(batch_size)]).float()
        v = torch.cat([self.model.encode_video(x.to(self.device, self.dtype)) for x in video.split(batch_size)]).float()
        return self._head(a, v).numpy()

    @torch.no_grad()
    def _encode_audio(self, audio, batch_size: int) -> torch.Tensor:
        audio = torch.as_tensor(np.asarray(audio, dtype=np.float32) if not torch.is_tensor(audio) else audio.float())
        n = self.spec.num_samples
        if audio.shape[-1] < n:
            audio = torch.nn.functional.pad(audio, (0, n - audio.shape[-1]))
        audio = audio[..., :n]
        out = [self.model.encode_audio(log_mel(a, self.spec).to(self.device, self.dtype)) for a in audio.split(batch_size)]
        return torch.cat(out).float()

    @torch.no_grad()
    def _encode_video(self, video, batch_size: int) -> torch.Tensor:
        video = video if torch.is_tensor(video) else torch.from_numpy(np.ascontiguousarray(video))
        out = [self.model.encode_video(clip_tensor(v, self.spec).to(self.device, self.dtype)) for v in video.split(batch_size)]
        return torch.cat(out).float()

    @torch.no_grad()
    def _head(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.model.head(a.to(self.device, self.dtype), v.to(self.device, self.dtype)).float().cpu()

    def phi(self, audio: np.ndarray | torch.Tensor, video: np.ndarray | torch.Tensor, batch_size: int = 32) -> np.ndarray:
        """audio float [B, samples at spec.audio_rate for spec.duration] (shorter is zero-padded);
        video uint8 [B, T, H, W, 3] RGB, any H, W (resized + center-cropped) -> phi [B] (float32).
        These are already-cut clips, so this is the native preprocessing whatever `preprocess` says;
        the authors' cut needs the file (`phi_inputs` on `asva_preprocess` clips)."""
        a = self._encode_audio(audio, batch_size)
        v = self._encode_video(video, batch_size)
        return self._head(a, v).numpy()

    def psync(self, requests: Sequence[tuple[DecodedVideo, float]], shift: float = 0.25, batch_size: int = 32) -> np.ndarray:
        """[n, 2] float array (p_a2v, p_v2a) for (video, center time) requests; each of the 3 audio and
        3 video clips of a request is encoded once, all requests batched together. Under
        preprocess=asva a request's video is its file path (or a DecodedVideo with source["path"])."""
        if len(requests) == 0:
            return np.zeros((0, 2), dtype=np.float32)
        spec = self.spec
        shifts = np.array([-shift, 0.0, shift])
        if self.preprocess == "asva":
            return self._psync_asva(requests, shifts, batch_size)
        audios, frames = [], []
        for video, center in requests:
            if video.audio_rate != spec.audio_rate:
                raise ValueError(f"audio rate {video.audio_rate} != {spec.audio_rate}")
            starts = float(center) - spec.duration / 2 + shifts
            audios.append(clip_audio(video, starts, spec))
            frames.append(fit_frames(clip_frames(video, starts, spec), spec.image_size, spec.resize))
        n = len(requests)
        a = self._encode_audio(np.concatenate(audios), batch_size).reshape(n, 3, -1)
        v = self._encode_video(np.concatenate(frames), batch_size).reshape(n, 3, -1)
        return self._psync_from(a, v)

    @torch.no_grad()
    def _psync_asva(self, requests, shifts: np.ndarray, batch_size: int) -> np.ndarray:
        """The 3 + 3 clips of each request cut from its source file as the authors' loader does."""
        from .asva_preprocess import asva_clips

        vids, mels = [], []
        for video, center in requests:
            path = video if isinstance(video, (str, Path)) else getattr(video, "source", {}).get("path")
            if not path:
                raise ValueError("preprocess=asva cuts clips from the source file, but this video has no "
                                 "source['path'] (pass the file path, or use preprocess=native)")
            v, m = asva_clips(path, float(center) - self.spec.duration / 2 + shifts, self.spec)
            vids.append(v)
            mels.append(m)
        n = len(requests)
        mel, video = torch.cat(mels), torch.cat(vids)
        a = torch.cat([self.model.encode_audio(x.to(self.device, self.dtype)) for x in mel.split(batch_size)]).float()
        v = torch.cat([self.model.encode_video(x.to(self.device, self.dtype)) for x in video.split(batch_size)]).float()
        return self._psync_from(a.reshape(n, 3, -1), v.reshape(n, 3, -1))

    def _psync_from(self, a: torch.Tensor, v: torch.Tensor) -> np.ndarray:
        # a2v: audio shifted (-, 0, +) against the true video; v2a: true audio against shifted videos
        phi_a2v = self._head(a, v[:, 1:2].expand(-1, 3, -1))
        phi_v2a = self._head(a[:, 1:2].expand(-1, 3, -1), v)
        p_a2v = torch.softmax(phi_a2v, dim=1)[:, 1]
        p_v2a = torch.softmax(phi_v2a, dim=1)[:, 1]
        return torch.stack([p_a2v, p_v2a], dim=1).numpy().astype(np.float32)
