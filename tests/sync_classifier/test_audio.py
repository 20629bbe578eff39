import numpy as np
import torch

from sync_classifier.audio import kaldi_mel_banks, log_mel
from sync_classifier.config import ClipSpec


def _mel_hz(m):
    return 700.0 * (np.exp(m / 1127.0) - 1.0)


def test_imagebind_shape_padding_and_normalisation():
    spec = ClipSpec()
    x = torch.randn(3, 32000) * 0.1
    m = log_mel(x, spec)
    assert m.shape == (3, 1, 128, 204)
    # 2 s -> 198 Kaldi frames (25 ms / 10 ms, snip_edges); the 6 padded frames are zeros before normalisation
    pad = m[..., 198:]
    assert torch.allclose(pad, torch.full_like(pad, 4.268 / 9.138))
    assert not torch.allclose(m[..., 197], torch.full_like(m[..., 197], 4.268 / 9.138))


def test_sine_lands_in_the_right_mel_bin():
    spec = ClipSpec()
    t = np.arange(32000) / 16000
    f0 = 1000.0
    m = log_mel(torch.tensor(np.sin(2 * np.pi * f0 * t), dtype=torch.float32), spec)[0, :, :198]
    peak = int(m.mean(-1).argmax())
    lo, hi = 1127 * np.log1p(20 / 700), 1127 * np.log1p(8000 / 700)
    centers = _mel_hz(lo + (np.arange(128) + 1) * (hi - lo) / 129)
    assert abs(peak - int(np.abs(centers - f0).argmin())) <= 1


def test_click_is_localised_in_time():
    spec = ClipSpec()
    x = torch.zeros(32000)
    x[16000:16040] = 1.0  # click at 1.0 s
    m = log_mel(x, spec)[0, :, :198]
    frame = int(m.mean(0).argmax())
    assert abs(frame - (16000 - 200) / 160) <= 3  # frame f covers samples [160 f, 160 f + 400)


def test_mel_banks_are_kaldi_triangles():
    b = kaldi_mel_banks(128, 512, 16000)
    assert b.shape == (128, 257)
    assert torch.all(b >= 0) and torch.all(b <= 1.0 + 1e-6)
    assert b[:, -1].abs().sum() == 0  # Nyquist bin unused, as Kaldi
    # as in Kaldi/torchaudio, with 128 bins on a 512-point FFT a few low filters fall between FFT bins
    assert int((b.sum(1) > 0).sum()) >= 120
    assert torch.all(b[20:].sum(1) > 0)
