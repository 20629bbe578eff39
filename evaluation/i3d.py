"""Inception-I3D (Carreira & Zisserman 2017), the video network behind FVD and KVD.

Public FVD code (StyleGAN-V, "common_metrics_on_video_quality", and the AVSync15 authors' evaluation) runs the
Kinetics-400 I3D shipped as a TorchScript file, `i3d_torchscript.pt`, called as
`net(x, rescale=False, resize=False, return_features=True)` on [B, 3, T, 224, 224] clips in [-1, 1]; its
features are the 400 Kinetics logits averaged over time. That file holds code and weights together, so the
real numbers need it (`I3D_TORCHSCRIPT_URL`, or a local copy). This module is the same architecture in plain
PyTorch (TF-style "same" padding, Inception modules 3b..5c, 400 logits averaged over time) so that a
random-init instance exists for tests and for `--allow-random-weights` runs; `width` scales every channel
count (1.0 = the real network, 0.125 = a toy one).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

I3D_TORCHSCRIPT_URL = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1"

# (name, [b0, b1a, b1b, b2a, b2b, b3b]) of the Inception modules, with max pools between groups
_MODULES = [
    ("Mixed_3b", [64, 96, 128, 16, 32, 32]), ("Mixed_3c", [128, 128, 192, 32, 96, 64]), ("pool4", None),
    ("Mixed_4b", [192, 96, 208, 16, 48, 64]), ("Mixed_4c", [160, 112, 224, 24, 64, 64]),
    ("Mixed_4d", [128, 128, 256, 24, 64, 64]), ("Mixed_4e", [112, 144, 288, 32, 64, 64]),
    ("Mixed_4f", [256, 160, 320, 32, 128, 128]), ("pool5", None),
    ("Mixed_5b", [256, 160, 320, 32, 128, 128]), ("Mixed_5c", [384, 192, 384, 48, 128, 128]),
]


def _same_pad(x: torch.Tensor, kernel, stride) -> torch.Tensor:
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class Unit3D(nn.Module):
    def __init__(self, cin, cout, kernel=(1, 1, 1), stride=(1, 1, 1), bn_relu=True, bias=False):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv3d = nn.Conv3d(cin, cout, kernel, stride, bias=bias)
        self.bn = nn.BatchNorm3d(cout, eps=1e-3, momentum=0.01) if bn_relu else None

    def forward(self, x):
        x = self.conv3d(_same_pad(x, self.kernel, self.stride))
        return F.relu(self.bn(x)) if self.bn is not None else x


class MaxPoolSame(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x):
        return F.max_pool3d(_same_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionModule(nn.Module):
    def __init__(self, cin, c):
        super().__init__()
        self.b0 = Unit3D(cin, c[0])
        self.b1a, self.b1b = Unit3D(cin, c[1]), Unit3D(c[1], c[2], (3, 3, 3))
        self.b2a, self.b2b = Unit3D(cin, c[3]), Unit3D(c[3], c[4], (3, 3, 3))
        self.b3a, self.b3b = MaxPoolSame((3, 3, 3), (1, 1, 1)), Unit3D(cin, c[5])
        self.out_channels = c[0] + c[2] + c[4] + c[5]

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(nn.Module):
    """x [B, 3, T, H, W] in [-1, 1] -> [B, num_classes] logits averaged over time (the FVD features)."""

    def __init__(self, num_classes: int = 400, width: float = 1.0):
        super().__init__()
        w = lambda c: max(1, int(math.ceil(c * width)))  # noqa: E731
        layers = [Unit3D(3, w(64), (7, 7, 7), (2, 2, 2)), MaxPoolSame((1, 3, 3), (1, 2, 2)),
                  Unit3D(w(64), w(64)), Unit3D(w(64), w(192), (3, 3, 3)), MaxPoolSame((1, 3, 3), (1, 2, 2))]
        c = w(192)
        for name, spec in _MODULES:
            if spec is None:
                layers.append(MaxPoolSame((3, 3, 3), (2, 2, 2)) if name == "pool4" else MaxPoolSame((2, 2, 2), (2, 2, 2)))
                continue
            m = InceptionModule(c, [w(v) for v in spec])
            layers.append(m)
            c = m.out_channels
        self.features = nn.Sequential(*layers)
        self.logits = Unit3D(c, num_classes, bn_relu=False, bias=True)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        # 2 x 7 x 7 average pool as the original, adapted to whatever is left (short clips, small inputs)
        x = F.adaptive_avg_pool3d(x, (max(1, x.shape[2] - 1), 1, 1))
        return self.logits(x).mean(dim=(2, 3, 4))


__all__ = ["I3D_TORCHSCRIPT_URL", "InceptionI3d"]
