"""RelSync, P_Align and AlignSync (AVSync15 main paper Sec. 3.2, as the authors' evaluation code computes them).

- phi(a, v): the sync classifier's av-sync score (`sync_classifier.score.SyncScorer`) of 2 s of audio and the
  12 frames at 6 fps over the same span.
- RelSync = exp(phi(a_gen, v_gen)) / (exp(phi(a_ref, v_ref)) + exp(phi(a_gen, v_gen))) = sigmoid(phi_gen - phi_ref):
  0.5 when the generated pair is as synchronised as the ground truth.
- P_Align = mean over generated frames 2..N of exp(IA_f) / (exp(IA_ref,1) + exp(IA_f)), IA_f = ImageBind
  cos(generated frame f, generated audio), IA_ref,1 = cos(reference first frame, reference audio).
- AlignSync = RelSync * P_Align.
"""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


def relsync(phi_generated: np.ndarray, phi_reference: np.ndarray) -> np.ndarray:
    """exp(phi_gen) / (exp(phi_ref) + exp(phi_gen)), stably."""
    return sigmoid(np.asarray(phi_generated, np.float64) - np.asarray(phi_reference, np.float64))


def p_align(ia_generated_frames: np.ndarray, ia_reference_first: float) -> float:
    """mean_f exp(IA_f) / (exp(IA_ref,1) + exp(IA_f)) over the generated frames given (2..N)."""
    return float(np.mean(sigmoid(np.asarray(ia_generated_frames, np.float64) - float(ia_reference_first))))


def load_scorer(checkpoint: str, device: str = "cpu"):
    """The sync classifier as a SyncScorer; FileNotFoundError naming the folder when it is missing."""
    from pathlib import Path

    from sync_classifier.score import SyncScorer

    if not (Path(checkpoint) / "config.json").is_file():
        raise FileNotFoundError(f"sync classifier checkpoint {checkpoint!r} not found (a folder with config.json + "
                                f"model.safetensors, as sync_classifier.train writes)")
    return SyncScorer.from_pretrained(checkpoint, device=device)


__all__ = ["sigmoid", "relsync", "p_align", "load_scorer"]
