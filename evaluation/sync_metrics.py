"""RelSync, P_Align and AlignSync (AVSync15 main paper Sec. 3.2, as the authors' evaluation code computes them).

- phi(a, v): the sync classifier's av-sync score (`sync_classifier.score.SyncScorer`) of 2 s of audio and the
  12 frames at 6 fps over the same span.
- RelSync = exp(phi(a_gen, v_gen)) / (exp(phi(a_ref, v_ref)) + exp(phi(a_gen, v_gen))) = sigmoid(phi_gen - phi_ref):
  0.5 when the generated pair is as synchronised as the ground truth.
- P_Align = mean over generated frames 2..N of exp(IA_f) / (exp(IA_ref,1) + exp(IA_f)), IA_f = ImageBind
  cos(generated frame f, generated audio), IA_ref,1 = cos(reference first frame, reference audio).
- AlignSync = RelSync * P_Align.

Inputs of phi: with the authors' released classifier (`preprocess` "auto" -> "asva") a clip is cut from
the file as their evaluation does (`sync_inputs`: first frame at or after each time, square crop,
bilinear 256 then bicubic 224, CLIP normalisation; their audio path); "native" uses this project's cut.
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


def load_scorer(checkpoint: str, device: str = "cpu", preprocess: str = "auto"):
    """The sync classifier as a SyncScorer (this project's checkpoint or the authors' `modules` layout);
    FileNotFoundError naming the folder when it is missing."""
    from pathlib import Path

    from sync_classifier.score import SyncScorer

    p = Path(checkpoint)
    if not (p / "config.json").is_file():
        from sync_classifier.asva import find_asva_modules

        try:
            find_asva_modules(p)
        except FileNotFoundError:
            raise FileNotFoundError(f"sync classifier checkpoint {checkpoint!r} not found (a folder with config.json + "
                                    f"model.safetensors, as sync_classifier.train writes, or the authors' "
                                    f"audio_encoder/, video_encoder/, head/ modules)") from None
    return SyncScorer.from_pretrained(checkpoint, device=device, preprocess=preprocess)


def sync_inputs(path, start: float | None = None, spec=None):
    """(video [3, 12, 224, 224], mel [1, 128, 204]) of the 2 s clip of a file from `start` (None: the
    middle of min(video, audio duration)), as the authors' RelSync / AlignSync evaluation cuts it."""
    from sync_classifier.asva import asva_spec
    from sync_classifier.asva_preprocess import relsync_clip

    return relsync_clip(path, start, spec or asva_spec())


def phi_of_files(scorer, paths, starts) -> np.ndarray:
    """phi [n] of clips of files under the scorer's preprocessing "asva" (`sync_inputs`)."""
    import torch

    if scorer.preprocess != "asva":
        raise ValueError("phi_of_files cuts clips as the authors' evaluation (preprocess=asva); this scorer uses "
                         f"{scorer.preprocess!r}: use SyncScorer.phi on decoded clips")
    vids, mels = zip(*(sync_inputs(p, s, scorer.spec) for p, s in zip(paths, starts)))
    return scorer.phi_inputs(torch.stack(vids), torch.stack(mels))


__all__ = ["sigmoid", "relsync", "p_align", "load_scorer", "sync_inputs", "phi_of_files"]
