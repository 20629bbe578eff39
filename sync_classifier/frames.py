"""Video front-end: uint8 RGB frames -> normalised float clip tensor for the video encoder."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# Kinetics statistics, as used by R(2+1)D / AVID video models.
MEAN = (0.43216, 0.394666, 0.37645)
STD = (0.22803, 0.22145, 0.216989)


def clip_tensor(frames: np.ndarray | torch.Tensor, spec, flip: torch.Tensor | None = None) -> torch.Tensor:
    """`video_to_tensor` with the size, normalisation and resize interpolation of a ClipSpec."""
    return video_to_tensor(frames, spec.image_size, flip=flip, mean=spec.video_mean, std=spec.video_std, resize=spec.resize)


def video_to_tensor(frames: np.ndarray | torch.Tensor, size: int, flip: torch.Tensor | None = None,
                    mean=MEAN, std=STD, resize: str = "bilinear") -> torch.Tensor:
    """frames uint8 [..., T, H, W, 3] -> float [..., 3, T, size, size].

    Any H, W: the short side is resized to `size` (`resize` interpolation, antialiased) and the center
    cropped; then (x / 255 - mean) / std per channel. `flip` (bool [...], optional) mirrors the chosen
    clips horizontally (training augmentation).
    """
    x = torch.as_tensor(np.asarray(frames) if not torch.is_tensor(frames) else frames)
    lead, (t, h, w, c) = x.shape[:-4], x.shape[-4:]
    x = x.reshape(-1, h, w, c).permute(0, 3, 1, 2).float().div_(255.0)  # [N*T, 3, H, W]
    if (h, w) != (size, size):
        s = size / min(h, w)
        nh, nw = max(size, round(h * s)), max(size, round(w * s))
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode=resize, antialias=True, align_corners=False)
        top, left = (nh - size) // 2, (nw - size) // 2
        x = x[:, :, top : top + size, left : left + size]
    mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    x = (x - mean) / std
    x = x.reshape(-1, t, 3, size, size)
    if flip is not None:
        f = torch.as_tensor(flip).reshape(-1).bool()
        x[f] = x[f].flip(-1)
    return x.permute(0, 2, 1, 3, 4).reshape(*lead, 3, t, size, size).contiguous()
