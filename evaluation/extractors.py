"""Feature extractors of the distribution metrics, each a declared unit: its weights (a local path or the
public URL every public implementation downloads), a `tiny` preset (the same family at toy size, random
init, for tests) and one `load(random)` that fails at start, naming the file to provide, when weights are
missing and random weights were not allowed.

| metric    | network                                   | features                       | weights                         |
|-----------|-------------------------------------------|--------------------------------|---------------------------------|
| FVD, KVD  | I3D (Kinetics-400), `evaluation.i3d`       | 400 logits, clip in [-1, 1]    | StyleGAN-V `i3d_torchscript.pt`  |
| FID       | InceptionV3 "FID" variant (pytorch-fid)    | 2048-d pool3, frame at 299 px  | pytorch-fid `pt_inception-2015`  |
| FAD       | VGGish, `evaluation.vggish`                | 128-d per 0.96 s example        | torchvggish `vggish-10086976`    |
| KL        | PaSST-S (hear21passt)                      | 527 AudioSet logits, 32 kHz     | PaSST `passt-s-...-ap.476-swa`   |
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from curate.models import batched


class WeightsMissing(Exception):
    """A network's weights are not available and random weights were not allowed; says what to provide."""


def resolve_weights(spec: str, what: str) -> str:
    """A local file for `spec` (a path, or an http(s) URL fetched into the torch hub cache); WeightsMissing
    naming `what`, the path and the URL when it cannot be had. Unreachable hosts fail at once."""
    if not spec:
        raise WeightsMissing(f"{what}: no weights configured")
    if not spec.startswith(("http://", "https://")):
        if os.path.isfile(spec):
            return spec
        raise WeightsMissing(f"{what}: weights file {spec!r} not found")
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(spec.split("?")[0]))
    if os.path.isfile(cached):
        return cached
    from common.hub import url_reachable

    if not url_reachable(spec):
        raise WeightsMissing(f"{what}: {cached!r} not cached and {spec} cannot be reached (offline); download it "
                             f"elsewhere and give its path")
    try:
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        torch.hub.download_url_to_file(spec, cached, progress=False)
    except Exception as e:
        raise WeightsMissing(f"{what}: downloading {spec} failed ({type(e).__name__}: {str(e)[:200]})") from None
    return cached


def resize_batch(x: torch.Tensor, size: int | tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """float [N, C, H, W] -> [N, C, size, size] (no crop: the aspect is squeezed, as the public FVD/FID code)."""
    size = (size, size) if isinstance(size, int) else size
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=mode in ("bilinear", "bicubic"))


def variance_preserving_init(net: torch.nn.Module) -> None:
    """He-normal weights, zero biases on every conv / linear layer: a deep random network whose features still
    vary with the input (PyTorch's default init shrinks activations layer by layer until a deep random I3D's
    outputs are constant, and PaSST zero-inits its head), so random-weight smoke runs exercise the statistics."""
    for m in net.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)


@dataclass
class Extractor:
    """Base: `weights` (path or URL), `preset` ('real' or 'tiny'), `device`, `batch_size`."""

    name: ClassVar[str] = ""
    default_weights: ClassVar[str] = ""
    config_key: ClassVar[str] = ""
    weights: str = ""
    preset: str = "real"
    device: str = "cpu"
    batch_size: int = 16
    random: bool = False

    def __post_init__(self):
        self.weights = self.weights or self.default_weights
        self.net = None

    def info(self) -> dict:
        return {"network": self.name, "preset": self.preset, "weights": None if self.random else self.weights,
                "random_weights": self.random}

    def load(self, allow_random: bool) -> "Extractor":
        """Real weights; if they cannot be had: random init when allowed, else WeightsMissing."""
        if self.preset == "tiny":
            if not allow_random:
                raise WeightsMissing(f"{self.name}: preset 'tiny' has no released weights (random init only; "
                                     f"pass --allow-random-weights)")
            self.random = True
        else:
            try:
                self._load_real(resolve_weights(self.weights, f"{self.name} ({self.config_key}={self.weights})"))
            except WeightsMissing:
                if not allow_random:
                    raise
                self.random = True
        if self.random:
            torch.manual_seed(0)
            self._build_random()
            variance_preserving_init(self.net)
        self.net = self.net.to(self.device).eval()
        return self

    def _load_real(self, path: str) -> None:
        raise NotImplementedError

    def _build_random(self) -> None:
        raise NotImplementedError


# ------------------------------------------------------------------------------------------------ video


@dataclass
class I3DExtractor(Extractor):
    """FVD / KVD features: clips uint8 [B, T, H, W, 3] -> [B, 400]; frames resized to 224 x 224 (bicubic,
    antialiased), scaled to [-1, 1], as the AVSync15 authors' evaluation."""

    name: ClassVar[str] = "I3D (Kinetics-400, i3d_torchscript.pt)"
    config_key: ClassVar[str] = "i3d.weights"
    default_weights: ClassVar[str] = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1"
    image_size: int = 224
    _torchscript: bool = False

    def _load_real(self, path):
        self.net = torch.jit.load(path, map_location="cpu")
        self._torchscript = True

    def _build_random(self):
        from evaluation.i3d import InceptionI3d

        self.net = InceptionI3d(400, width=1.0 if self.preset == "real" else 0.125)
        if self.preset == "tiny":
            self.image_size = min(self.image_size, 64)

    @torch.no_grad()
    def __call__(self, clips: np.ndarray) -> np.ndarray:
        out = []
        for sl in batched(len(clips), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(clips[sl]))  # [b, t, h, w, 3]
            b, t = x.shape[:2]
            x = x.reshape(b * t, *x.shape[2:]).permute(0, 3, 1, 2).float() / 255.0
            x = resize_batch(x, self.image_size, "bicubic").clamp(0, 1) * 2 - 1
            x = x.reshape(b, t, 3, self.image_size, self.image_size).permute(0, 2, 1, 3, 4).to(self.device)
            f = self.net(x, rescale=False, resize=False, return_features=True) if self._torchscript else self.net(x)
            out.append(f.float().cpu().numpy())
        return np.concatenate(out).astype(np.float64)


FID_INPUTS = {"299-bilinear": (299, "bilinear"), "229-bicubic": (229, "bicubic")}


def fid_input(frames: np.ndarray, mode: str = "299-bilinear", size: int | None = None,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float32 [N, 3, s, s] in [-1, 1] as FID's Inception takes it (`mode`: FID_INPUTS;
    `size` overrides the side). `229-bicubic` is ASVA's: [0, 1] floats resized to s x s bicubic with antialiasing
    (no clamp), centre crop s (a no-op after the square resize); `299-bilinear` is pytorch-fid's (no antialiasing)."""
    if mode not in FID_INPUTS:
        raise ValueError(f"unknown FID input {mode!r}; known: {', '.join(FID_INPUTS)}")
    side, interp = FID_INPUTS[mode]
    side = size or side
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).to(dtype) / 255.0
    if interp == "bicubic":
        x = F.interpolate(x, size=(side, side), mode="bicubic", align_corners=False, antialias=True)
    else:
        x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    return 2 * x - 1


@dataclass
class InceptionExtractor(Extractor):
    """FID features: frames uint8 [N, H, W, 3] -> [N, 2048] (pytorch-fid's FID InceptionV3, pool3). `input_mode`
    (set from the protocol): `299-bilinear` (pytorch-fid: bilinear resize to 299) or `229-bicubic` (ASVA's
    compute_fid.py: 229 x 229 bicubic antialiased, aspect ratio not kept, then centre crop 229); both scaled to
    [-1, 1]. The tiny preset runs the same network at 75 px (its smallest input)."""

    name: ClassVar[str] = "InceptionV3 (FID, pytorch-fid pt_inception-2015-12-05)"
    config_key: ClassVar[str] = "inception.weights"
    default_weights: ClassVar[str] = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
    image_size: int = 299
    input_mode: str = "299-bilinear"

    def info(self) -> dict:
        return super().info() | {"input": self.input_mode if self.preset == "real" else f"{self.input_mode} (tiny: 75 px)"}

    @staticmethod
    def _architecture():
        from pytorch_fid import inception as pf

        net = pf._inception_v3(num_classes=1008, aux_logits=False, weights=None)
        net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = pf.FIDInceptionA(192, 32), pf.FIDInceptionA(256, 64), pf.FIDInceptionA(288, 64)
        net.Mixed_6b, net.Mixed_6c = pf.FIDInceptionC(768, 128), pf.FIDInceptionC(768, 160)
        net.Mixed_6d, net.Mixed_6e = pf.FIDInceptionC(768, 160), pf.FIDInceptionC(768, 192)
        net.Mixed_7b, net.Mixed_7c = pf.FIDInceptionE_1(1280), pf.FIDInceptionE_2(2048)
        return net

    def _load_real(self, path):
        net = self._architecture()
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.net = net

    def _build_random(self):
        self.net = self._architecture()
        if self.preset == "tiny":
            self.image_size = 75

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        n = self.net
        blocks = [n.Conv2d_1a_3x3, n.Conv2d_2a_3x3, n.Conv2d_2b_3x3, n.maxpool1, n.Conv2d_3b_1x1, n.Conv2d_4a_3x3, n.maxpool2,
                  n.Mixed_5b, n.Mixed_5c, n.Mixed_5d, n.Mixed_6a, n.Mixed_6b, n.Mixed_6c, n.Mixed_6d, n.Mixed_6e,
                  n.Mixed_7a, n.Mixed_7b, n.Mixed_7c]
        out = []
        for sl in batched(len(frames), self.batch_size):
            x = fid_input(frames[sl], self.input_mode, None if self.preset == "real" else self.image_size,
                          next(self.net.parameters()).dtype).to(self.device)
            for blk in blocks:
                x = blk(x)
            out.append(F.adaptive_avg_pool2d(x, 1).flatten(1).float().cpu().numpy())
        return np.concatenate(out).astype(np.float64)


# ------------------------------------------------------------------------------------------------ audio


@dataclass
class VGGishExtractor(Extractor):
    """FAD features: mono 16 kHz clips -> [sum of examples, 128]: every 0.96 s example is one sample of the set."""

    name: ClassVar[str] = "VGGish (torchvggish vggish-10086976)"
    config_key: ClassVar[str] = "vggish.weights"
    default_weights: ClassVar[str] = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"

    def _load_real(self, path):
        from evaluation.vggish import VGGish

        net = VGGish()
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.net = net

    def _build_random(self):
        from evaluation.vggish import VGGish

        self.net = VGGish(1.0 if self.preset == "real" else 0.0625)

    @torch.no_grad()
    def __call__(self, audios: list[np.ndarray]) -> np.ndarray:
        from evaluation.vggish import log_mel_examples

        ex = torch.cat([log_mel_examples(a) for a in audios])
        out = [self.net(ex[sl].to(self.device)).float().cpu().numpy() for sl in batched(len(ex), self.batch_size)]
        return np.concatenate(out).astype(np.float64)


@dataclass
class MelceptionExtractor(Extractor):
    """FAD features (JointDiT): mono clips -> [B, 2048] Melception pool features of SpecVQGAN's standardised log
    mel at 22050 Hz (evaluation.melception). Weights: SpecVQGAN's melception-21-05-10T09-28-40.pt, given as a path
    (`melception.weights=...`). The tiny preset is the same network, random."""

    name: ClassVar[str] = "Melception (SpecVQGAN melception-21-05-10T09-28-40)"
    config_key: ClassVar[str] = "melception.weights"
    default_weights: ClassVar[str] = ""

    def _load_real(self, path):
        from evaluation.melception import load_melception

        self.net = load_melception(path)

    def _build_random(self):
        from evaluation.melception import MelceptionNet

        self.net = MelceptionNet()

    @torch.no_grad()
    def __call__(self, audios: list[np.ndarray], rate: int = 16000) -> np.ndarray:
        from evaluation.melception import melception_mel

        mels = [melception_mel(a, rate) for a in audios]
        out = []
        for idx in _same_length(mels):
            x = torch.from_numpy(np.stack([mels[i] for i in idx])).to(self.device)
            out.append((idx, self.net(x)[0].float().cpu().numpy()))
        feats = np.zeros((len(mels), 2048))
        for idx, f in out:
            feats[idx] = f
        return feats


def _same_length(mels: list[np.ndarray]) -> list[list[int]]:
    groups: dict = {}
    for i, m in enumerate(mels):
        groups.setdefault(m.shape[-1], []).append(i)
    return list(groups.values())


@dataclass
class PaSSTExtractor(Extractor):
    """KL features: mono 16 kHz clips (resampled to 32 kHz) -> [B, 527] AudioSet logits of PaSST-S (hear21passt)."""

    name: ClassVar[str] = "PaSST-S (hear21passt passt_s_swa_p16_128_ap476)"
    config_key: ClassVar[str] = "passt.weights"
    default_weights: ClassVar[str] = "https://github.com/kkoutini/PaSST/releases/download/v0.0.1-audioset/passt-s-f128-p16-s10-ap.476-swa.pt"
    rate: int = 32000

    def _mel(self):
        from hear21passt.models.preprocess import AugmentMelSTFT

        return AugmentMelSTFT(n_mels=128, sr=32000, win_length=800, hopsize=320, n_fft=1024, freqm=48, timem=192, htk=False,
                              fmin=0.0, fmax=None, norm=1, fmin_aug_range=10, fmax_aug_range=2000).eval()

    def _load_real(self, path):
        from hear21passt.models.passt import get_model

        with contextlib.redirect_stdout(io.StringIO()):  # get_model prints the whole network
            net = get_model(arch="passt_s_swa_p16_128_ap476", pretrained=False, n_classes=527, in_channels=1,
                            fstride=10, tstride=10, input_fdim=128, input_tdim=998)
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        self.mel, self.net = self._mel(), net

    def _build_random(self):
        from hear21passt.models.passt import PaSST

        kw = dict(embed_dim=768, depth=12, num_heads=12) if self.preset == "real" else dict(embed_dim=32, depth=1, num_heads=2)
        with contextlib.redirect_stdout(io.StringIO()):
            self.net = PaSST(img_size=(128, 998), stride=(10, 10), in_chans=1, num_classes=527, distilled=True, **kw)
        self.mel = self._mel()

    @torch.no_grad()
    def __call__(self, audios: list[np.ndarray], rate: int = 16000) -> np.ndarray:
        import librosa

        waves = [librosa.resample(np.asarray(a, np.float32), orig_sr=rate, target_sr=self.rate) if rate != self.rate else a for a in audios]
        n = max(len(w) for w in waves)
        x = torch.from_numpy(np.stack([np.pad(w, (0, n - len(w))) for w in waves]).astype(np.float32))
        out = []
        import warnings

        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # PaSST prints shapes on its first call
            warnings.simplefilter("ignore")
            for sl in batched(len(x), self.batch_size):
                spec = self.mel(x[sl]).unsqueeze(1).to(self.device)
                logits, _ = self.net(spec)
                out.append(logits.float().cpu().numpy())
        return np.concatenate(out).astype(np.float64)


EXTRACTORS = {"i3d": I3DExtractor, "inception": InceptionExtractor, "vggish": VGGishExtractor,
              "melception": MelceptionExtractor, "passt": PaSSTExtractor}

__all__ = ["WeightsMissing", "resolve_weights", "Extractor", "I3DExtractor", "InceptionExtractor", "VGGishExtractor",
           "MelceptionExtractor", "PaSSTExtractor", "fid_input", "FID_INPUTS", "EXTRACTORS"]
