"""VGGish (Hershey et al. 2017), the audio network behind FAD, and its log-mel front end.

The architecture and parameter names match `torchvggish` (harritaylor), so its released state dict
(`VGGISH_URL`, converted from Google's TF checkpoint) loads as is. Front end as VGGish: 16 kHz mono,
25 ms Hann windows every 10 ms, 512-point magnitude spectrum, 64 HTK-mel bands 125-7500 Hz,
log(mel + 0.01), non-overlapping examples of 96 frames (0.96 s). The mel matrix comes from librosa
(htk=True, no area normalisation), which differs from VGGish's own matrix only in the edge handling of
the lowest bins. Embeddings are the 128-d output before the final ReLU and without PCA/quantisation
(what FAD code uses). `width` scales the channels (1.0 = the real network) for toy test models.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn as nn

VGGISH_URL = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"
RATE, WIN, HOP, N_FFT, N_MELS, EXAMPLE_FRAMES = 16000, 400, 160, 512, 64, 96


class VGGish(nn.Module):
    def __init__(self, width: float = 1.0):
        super().__init__()
        w = lambda c: max(1, int(math.ceil(c * width)))  # noqa: E731
        cfg = [w(64), "M", w(128), "M", w(256), w(256), "M", w(512), w(512), "M"]
        layers, cin = [], 1
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(nn.Linear(cin * 4 * 6, w(4096)), nn.ReLU(True), nn.Linear(w(4096), w(4096)),
                                        nn.ReLU(True), nn.Linear(w(4096), 128), nn.ReLU(True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """log-mel examples [N, 1, 96, 64] -> [N, 128] (before the final ReLU)."""
        x = self.features(x)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # TF (H, W, C) flattening order
        return self.embeddings[:-1](x)


@lru_cache(maxsize=2)
def _mel_matrix() -> torch.Tensor:
    import librosa

    return torch.from_numpy(librosa.filters.mel(sr=RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=125.0, fmax=7500.0, htk=True,
                                                norm=None)).float()


def log_mel_examples(audio: np.ndarray) -> torch.Tensor:
    """mono float audio at 16 kHz -> [n_examples, 1, 96, 64] (at least one example: short audio is zero-padded)."""
    x = torch.as_tensor(np.asarray(audio, np.float32))
    need = WIN + HOP * (EXAMPLE_FRAMES - 1)
    if x.numel() < need:
        x = torch.nn.functional.pad(x, (0, need - x.numel()))
    frames = x.unfold(0, WIN, HOP)  # [F, 400]
    window = torch.hann_window(WIN, periodic=True)
    spec = torch.fft.rfft(frames * window, n=N_FFT).abs()  # [F, 257]
    mel = torch.log(spec @ _mel_matrix().T + 0.01)  # [F, 64]
    n = mel.shape[0] // EXAMPLE_FRAMES
    return mel[: n * EXAMPLE_FRAMES].reshape(n, 1, EXAMPLE_FRAMES, N_MELS)


__all__ = ["VGGISH_URL", "VGGish", "log_mel_examples"]
