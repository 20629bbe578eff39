"""ImageBind scores of a clip, through the curation's adapter (`curate.models.imagebind`, unchanged).

Per clip, from unit-norm embeddings of its frames F_f, its audio A (the clip's audio, 2 s, as the adapter
takes it), its class text T and the conditioning image I:
- IA = mean_f cos(F_f, A), IT = mean_f cos(F_f, T) over frames 2..N under `avsync15` (all frames otherwise)
  (AVSync15 paper; the authors' code pairs every frame with the clip's whole audio);
- IB-VA = cos(V, A), IB-IV = cos(I, V), IB-IA = cos(I, A) with V the re-normalised mean of the frame
  embeddings (JointDiT Table 1; the paper gives no formula for the video embedding: this is our reading).
Cosines are reported as they are (not x100).
"""

from __future__ import annotations

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def clip_scores(frame_emb: np.ndarray, audio_emb: np.ndarray | None, text_emb: np.ndarray | None,
                image_emb: np.ndarray | None, skip_first: bool) -> dict:
    """Scores of one clip from its embeddings (frame_emb [T, D]; others [D] or None)."""
    f = frame_emb[1:] if skip_first and len(frame_emb) > 1 else frame_emb
    v = _unit(frame_emb.mean(axis=0))
    out = {}
    if audio_emb is not None:
        out["ia"] = float(np.mean(f @ audio_emb))
        out["ia_frames"] = (f @ audio_emb).astype(np.float64)
        out["ib_va"] = float(v @ audio_emb)
    if text_emb is not None:
        out["it"] = float(np.mean(f @ text_emb))
    if image_emb is not None:
        out["ib_iv"] = float(image_emb @ v)
        if audio_emb is not None:
            out["ib_ia"] = float(image_emb @ audio_emb)
    return out


def load_encoder(preset: str, checkpoint: str, device: str, allow_random: bool):
    """(ImageBindEncoder, random?) via the curation adapter; FileNotFoundError naming the checkpoint if missing."""
    import torch

    from common.hub import url_reachable
    from curate.models.imagebind import IMAGEBIND_HUGE_URL, load_imagebind, resolve_checkpoint

    random = preset != "huge"
    if not random:
        url = checkpoint if checkpoint.startswith(("http://", "https://")) else IMAGEBIND_HUGE_URL
        path, problem = resolve_checkpoint(checkpoint, download=url_reachable(url))  # offline: fail at once
        if problem:
            if not allow_random:
                raise FileNotFoundError(f"ImageBind: {problem}; provide imagebind_huge.pth as imagebind.checkpoint=PATH")
            random = True
    elif not allow_random:
        raise FileNotFoundError(f"ImageBind preset {preset!r} has no released weights (random init only; pass --allow-random-weights)")
    if random:
        torch.manual_seed(0)
    return load_imagebind(preset, checkpoint, device, torch.float32, random=random), random


__all__ = ["clip_scores", "load_encoder"]
