"""Audio front-end: ImageBind-style log-mel (Kaldi fbank) in plain torch (no torchaudio).

Matches `torchaudio.compliance.kaldi.fbank` as ImageBind calls it (`waveform2melspec`): the
waveform's mean is removed, 25 ms frames every 10 ms (snip_edges), per-frame DC removal,
pre-emphasis 0.97, Hann ("hanning") window, 512-point power spectrum, HTK-mel triangular filters
from 20 Hz to Nyquist, natural log floored at float32 eps, no dither, no energy. The result
[n_mels, frames] is zero-padded / cropped to `mel_frames` and normalised with (x - mean) / std
(ImageBind: -4.268, 9.138). 2 s at 16 kHz -> 198 frames -> padded to 1 x 128 x 204.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from .config import ClipSpec


@lru_cache(maxsize=8)
def kaldi_mel_banks(n_mels: int, n_fft: int, sample_rate: int, low_freq: float = 20.0) -> torch.Tensor:
    """[n_mels, n_fft // 2 + 1] triangular filters in the mel domain (Kaldi `get_mel_banks`), computed
    in float32 in the order torchaudio's Kaldi compliance code does (its low-power log-mel bins are
    sensitive to the filters' last bits)."""
    nyquist = 0.5 * sample_rate
    fft_bin_width = sample_rate / n_fft
    mel_low, mel_high = 1127.0 * math.log(1.0 + low_freq / 700.0), 1127.0 * math.log(1.0 + nyquist / 700.0)
    delta = (mel_high - mel_low) / (n_mels + 1)
    b = torch.arange(n_mels).unsqueeze(1)
    left, center, right = mel_low + b * delta, mel_low + (b + 1.0) * delta, mel_low + (b + 2.0) * delta
    mel = (1127.0 * (1.0 + (fft_bin_width * torch.arange(n_fft // 2)) / 700.0).log()).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.max(torch.zeros(1), torch.min(up, down))
    return torch.nn.functional.pad(banks.float(), (0, 1))  # Nyquist bin gets weight 0, as Kaldi


def log_mel(wave: torch.Tensor, spec: ClipSpec = ClipSpec(), remove_mean: bool = True) -> torch.Tensor:
    """wave float [..., samples] at spec.audio_rate -> normalised log-mel [..., 1, n_mels, mel_frames].
    remove_mean=False: the caller has already removed it (the authors' path removes the mean over all
    channels before taking channel 0)."""
    wave = torch.as_tensor(wave, dtype=torch.float32)
    lead = wave.shape[:-1]
    x = wave.reshape(-1, wave.shape[-1])
    if remove_mean:
        x = x - x.mean(dim=-1, keepdim=True)
    win = int(round(spec.audio_rate * spec.frame_length_ms / 1000.0))
    hop = int(round(spec.audio_rate * spec.frame_shift_ms / 1000.0))
    if x.shape[-1] < win:
        x = torch.nn.functional.pad(x, (0, win - x.shape[-1]))
    frames = x.unfold(-1, win, hop)  # [N, F, win]
    frames = frames - frames.mean(dim=-1, keepdim=True)
    prev = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
    frames = frames - 0.97 * prev
    window = torch.hann_window(win, periodic=False, dtype=torch.float32)  # Kaldi "hanning"
    n_fft = 1 << (win - 1).bit_length()
    frames = torch.nn.functional.pad(frames * window, (0, n_fft - win))
    power = torch.fft.rfft(frames).abs().pow(2.0)  # [N, F, n_fft/2+1]
    banks = kaldi_mel_banks(spec.n_mels, n_fft, spec.audio_rate)
    # one 2-D product per wave, as Kaldi: quiet high bins are rounding noise of the FFT, so the op
    # order decides their last bits and those show in the log
    mel = torch.stack([torch.mm(p, banks.T) for p in power])
    mel = torch.max(mel, torch.tensor(torch.finfo(torch.float32).eps)).log()  # [N, F, n_mels]
    mel = mel.transpose(-1, -2)  # [N, n_mels, F]
    t = mel.shape[-1]
    if t < spec.mel_frames:
        mel = torch.nn.functional.pad(mel, (0, spec.mel_frames - t))
    else:
        mel = mel[..., : spec.mel_frames]
    mel = (mel - spec.mel_mean) / spec.mel_std
    return mel.reshape(*lead, 1, spec.n_mels, spec.mel_frames)
