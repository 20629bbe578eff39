"""Melception (SpecVQGAN, Iashin & Rahtu 2021): the FAD feature network of JointDiT's tables.

- Network: torchvision's InceptionV3 layout for 1-channel input (first conv 1 -> 32), without its two max
  pools (a mel is only 80 high), 309 VGGSound classes; the FAD features are the 2048-d average pool. Our
  forward (`MelceptionNet.forward`) returns the 2048-d features, the logits and the bias-free logits.
- Weights: SpecVQGAN's released `melception-21-05-10T09-28-40.pt` (a dict whose `model` entry is the state dict,
  torchvision's key names, AuxLogits included); `load_melception` reads it.
- Input (`melception_mel`): audio at 22050 Hz -> |STFT| (n_fft 1024, hop 256, Hann, centred) -> 80-band Slaney
  mel (125-7600 Hz) -> 20 log10(max(x, 1e-5)), then (x - 20 + 100) / 100 clipped to [0, 1] (SpecVQGAN's
  feature extraction), then each band standardised with SpecVQGAN's VGGSound training statistics
  (`assets/melception_mel_stats.txt`: mean and std of each of the 80 bands, from SpecVQGAN, MIT licence).
  Audio at another rate is resampled to 22050 Hz first (librosa, soxr).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

RATE = 22050
N_MELS = 80
STATS = Path(__file__).resolve().parent / "assets" / "melception_mel_stats.txt"


class MelceptionNet(torch.nn.Module):
    """mel [B, 80, T] -> (features [B, 2048], logits [B, 309], logits without bias [B, 309])."""

    def __init__(self, num_classes: int = 309):
        super().__init__()
        from torchvision.models.inception import BasicConv2d, Inception3

        net = Inception3(num_classes=num_classes, aux_logits=True, init_weights=False)
        net.Conv2d_1a_3x3 = BasicConv2d(1, 32, kernel_size=3, stride=2)
        for name, mod in net.named_children():
            if name not in ("maxpool1", "maxpool2", "dropout"):
                self.add_module(name, mod)
        self.trunk = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "Mixed_5b",
                      "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a",
                      "Mixed_7b", "Mixed_7c"]

    def forward(self, mel: torch.Tensor):
        x = mel.unsqueeze(1)
        for name in self.trunk:
            x = getattr(self, name)(x)
        feats = F.adaptive_avg_pool2d(x, 1).flatten(1)
        unbiased = feats @ self.fc.weight.T
        return feats, unbiased + self.fc.bias, unbiased


def load_melception(path: str | Path, device: str = "cpu") -> MelceptionNet:
    """SpecVQGAN's released checkpoint (or any file with its layout: {'model': state dict}, torchvision key names,
    a DataParallel 'module.' prefix allowed) -> eval-mode net. A key or shape mismatch raises, naming the file."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:  # a training checkpoint may pickle plain Python objects beside the tensors
        state = torch.load(str(path), map_location="cpu", weights_only=False)
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    net = MelceptionNet()
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: not a Melception checkpoint in SpecVQGAN's layout ({str(e)[:300]})") from None
    return net.to(device).eval()


def mel_stats() -> tuple[np.ndarray, np.ndarray]:
    s = np.loadtxt(STATS)
    return s[:, 0], s[:, 1]


def melception_mel(audio: np.ndarray, rate: int = RATE) -> np.ndarray:
    """mono float audio -> float32 [80, T] standardised log mel (SpecVQGAN's extraction and normalisation)."""
    import librosa

    y = np.asarray(audio, np.float32)
    if rate != RATE:
        y = librosa.resample(y, orig_sr=rate, target_sr=RATE)
    basis = librosa.filters.mel(sr=RATE, n_fft=1024, fmin=125, fmax=7600, n_mels=N_MELS)
    spec = np.abs(librosa.stft(y, n_fft=1024, hop_length=256))
    mel = basis @ spec
    mel = np.clip((20 * np.log10(np.maximum(mel, 1e-5)) - 20 + 100) / 100, 0.0, 1.0)
    means, stds = mel_stats()
    return ((mel - means[:, None]) / stds[:, None]).astype(np.float32)


__all__ = ["MelceptionNet", "load_melception", "mel_stats", "melception_mel", "RATE"]
