"""ImageBind adapter (PyPI `imagebind-unofficial`, `import imagebind`; code and weights CC-BY-NC-SA 4.0).

Only the network and its BPE tokenizer are used; frames and audio come from our own decoder:
- `imagebind/__init__.py` imports `imagebind.data`, which pulls torchaudio, pytorchvideo (broken with
  current torchvision) and `pkg_resources` for its file loaders. We never use those loaders, so the
  `imagebind` package is registered without running its `__init__` and only `imagebind.models` is
  imported (if the user already imported `imagebind` normally, that module is used as is).
- Images: ImageBind's vision transform (bicubic resize of the short side to 224, center crop 224, CLIP
  mean/std), done batched in torch (`curate.models.image_batch`).
- Audio: ImageBind's `waveform2melspec` (Kaldi fbank, 128 mel bins, 204 frames, mean -4.268, std
  9.138), computed by `sync_classifier.audio.log_mel` (the same transform in plain torch, no
  torchaudio); one 2 s clip per frame instead of ImageBind's 3 clips per file.
- Text: ImageBind's `SimpleTokenizer` with the BPE vocabulary shipped inside the package.
- Audio tokens (AVSyncD): `ImageBindAudioTokens` is the audio branch alone (preprocessor, trunk, head,
  postprocessor, as named in the AVSync15 authors' audio encoder) and returns the trunk's patch tokens
  (CLS + 12 mel x 19 time patches for a 2 s clip) as well as the clip embedding.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from dataclasses import dataclass

import numpy as np

from curate.models import batched, image_batch

IMAGEBIND_HUGE_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
DEFAULT_CHECKPOINT = ".checkpoints/imagebind_huge.pth"
"""Where `imagebind_model.imagebind_huge(pretrained=True)` downloads its weights (relative to the cwd)."""

PRESETS = {
    # imagebind_model.imagebind_huge(): the released model (1.2 B parameters)
    "huge": dict(
        vision_embed_dim=1280, vision_num_blocks=32, vision_num_heads=16,
        text_embed_dim=1024, text_num_blocks=24, text_num_heads=16,
        out_embed_dim=1024, audio_drop_path=0.1, imu_drop_path=0.7,
    ),
    # the same architecture at toy width/depth, random init, for tests (seconds on a CPU)
    "tiny": dict(
        vision_embed_dim=32, vision_num_blocks=1, vision_num_heads=2,
        text_embed_dim=32, text_num_blocks=1, text_num_heads=2,
        audio_embed_dim=32, audio_num_blocks=1, audio_num_heads=2, audio_drop_path=0.0,
        depth_embed_dim=32, depth_num_blocks=1, depth_num_heads=2,
        thermal_embed_dim=32, thermal_num_blocks=1, thermal_num_heads=2,
        imu_embed_dim=32, imu_num_blocks=1, imu_num_heads=2, imu_drop_path=0.0,
        out_embed_dim=32,
    ),
}
IMAGE_SIZE = 224


def import_imagebind():
    """(imagebind_model module, SimpleTokenizer class, bpe vocab path) without `imagebind.data`."""
    try:  # pytorchvideo (if anything imports it) needs the pre-0.17 torchvision module name
        import torchvision.transforms._functional_tensor as _ft

        sys.modules.setdefault("torchvision.transforms.functional_tensor", _ft)
    except ImportError:
        pass
    if "imagebind" not in sys.modules:
        spec = importlib.util.find_spec("imagebind")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("the `imagebind` package is not installed (pip install imagebind-unofficial einops)")
        pkg = types.ModuleType("imagebind")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = spec
        pkg.__file__ = spec.origin
        sys.modules["imagebind"] = pkg
    from imagebind.models import imagebind_model
    from imagebind.models.multimodal_preprocessors import SimpleTokenizer

    bpe = os.path.join(list(sys.modules["imagebind"].__path__)[0], "bpe", "bpe_simple_vocab_16e6.txt.gz")
    return imagebind_model, SimpleTokenizer, bpe


def resolve_checkpoint(checkpoint: str | None, download: bool = True) -> tuple[str | None, str | None]:
    """(local checkpoint path, None) or (None, why not). The package's default location is filled from
    the package's URL, and an http(s) URL goes to the torch hub cache, as `imagebind_huge` does."""
    if not checkpoint:
        return None, "no checkpoint configured (imagebind.checkpoint is empty)"
    url, path = None, checkpoint
    if checkpoint.startswith(("http://", "https://")):
        import torch

        url = checkpoint
        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(checkpoint))
    elif os.path.normpath(checkpoint) == os.path.normpath(DEFAULT_CHECKPOINT):
        url = IMAGEBIND_HUGE_URL
    if os.path.isfile(path):
        return path, None
    if url is None or not download:
        return None, f"checkpoint file {path!r} not found"
    from common.hub import url_reachable

    if not url_reachable(url):  # offline: fail at once instead of waiting on a download
        return None, f"checkpoint {path!r} not found and {url} is not reachable"
    try:
        import torch

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        torch.hub.download_url_to_file(url, path, progress=False)
        return path, None
    except Exception as e:
        return None, f"checkpoint {path!r} not found and downloading {url} failed ({type(e).__name__}: {str(e)[:200]})"


def build_model(preset: str):
    imagebind_model, _, _ = import_imagebind()
    if preset not in PRESETS:
        raise ValueError(f"unknown ImageBind preset {preset!r}; known: {sorted(PRESETS)}")
    return imagebind_model.ImageBindModel(**PRESETS[preset])


@dataclass
class ImageBindEncoder:
    model: object
    tokenizer: object
    device: str
    dtype: object

    def _run(self, modality: str, x, batch_size: int) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for sl in batched(x.shape[0], batch_size):
                xb = x[sl].to(self.device)
                xb = xb.to(self.dtype) if xb.is_floating_point() else xb
                f = self.model({modality: xb})[modality].float()
                # the heads scale audio/text by a logit scale: re-normalise for plain cosines
                out.append(torch.nn.functional.normalize(f, dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 1), np.float32)

    def encode_images(self, frames: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """uint8 [H, W, 3] frames -> [N, D] unit-norm ImageBind vision embeddings."""
        import torch

        out = []
        for sl in batched(len(frames), batch_size):
            x = image_batch(frames[sl], IMAGE_SIZE, device=self.device)
            out.append(self._run("vision", x, batch_size))
        return np.concatenate(out) if out else np.zeros((0, 1), np.float32)

    def encode_audio(self, waves: np.ndarray, rate: int, batch_size: int = 32) -> np.ndarray:
        """float32 [N, samples] 2 s mono clips at `rate` (16 kHz) -> [N, D] unit-norm audio embeddings."""
        import torch

        from sync_classifier.audio import log_mel
        from sync_classifier.config import ClipSpec

        spec = ClipSpec(audio_rate=rate, duration=waves.shape[-1] / rate)
        out = []
        for sl in batched(len(waves), batch_size):
            mel = log_mel(torch.from_numpy(np.ascontiguousarray(waves[sl])), spec)  # [n, 1, 128, 204]
            out.append(self._run("audio", mel, batch_size))
        return np.concatenate(out) if out else np.zeros((0, 1), np.float32)

    def encode_text(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        import torch

        if not texts:
            return np.zeros((0, 1), np.float32)
        tokens = torch.stack([self.tokenizer(t).reshape(-1) for t in texts])
        return self._run("text", tokens, batch_size)


AUDIO_KEYS = ("audio_embed_dim", "audio_num_blocks", "audio_num_heads", "audio_drop_path", "audio_kernel_size",
              "audio_stride", "audio_num_mel_bins", "audio_target_len", "out_embed_dim")


def _audio_token_encoder_class():
    import torch
    from torch import nn

    class ImageBindAudioTokens(nn.Module):
        """ImageBind's audio branch: normalised log-mel [B, 1, 128, 204] -> (tokens [B, 1 + 12 * 19, D] after a
        final LayerNorm, clip embedding [B, E] before the logit scaling). Only the audio modules are built at
        the preset's size (the other modalities at toy size, then dropped), so `huge` costs its audio
        branch only (86 M parameters)."""

        def __init__(self, preset: str = "huge"):
            super().__init__()
            imagebind_model, _, _ = import_imagebind()
            if preset not in PRESETS:
                raise ValueError(f"unknown ImageBind preset {preset!r}; known: {sorted(PRESETS)}")
            kw = {k: v for k, v in PRESETS["tiny"].items() if k not in AUDIO_KEYS}
            kw.update({k: v for k, v in PRESETS[preset].items() if k in AUDIO_KEYS})
            full = imagebind_model.ImageBindModel(**kw)
            self.preset = preset
            self.preprocessor = full.modality_preprocessors["audio"]
            self.trunk = full.modality_trunks["audio"]
            self.head = full.modality_heads["audio"]
            self.postprocessor = full.modality_postprocessors["audio"]
            dim = self.head[0].normalized_shape[0]
            self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)

        @property
        def dim(self) -> int:
            return self.final_layer_norm.normalized_shape[0]

        def forward(self, mel: "torch.Tensor"):
            x = self.preprocessor(audio=mel)
            tokens = self.trunk(**x["trunk"])
            embedding = self.head(tokens, **x["head"])
            return self.final_layer_norm(tokens), embedding

        def load_imagebind_state(self, state: dict) -> None:
            """Load the audio part of an ImageBind checkpoint (`modality_*.audio.*` keys); every key must fit."""
            prefixes = {"modality_preprocessors.audio.": "preprocessor.", "modality_trunks.audio.": "trunk.",
                        "modality_heads.audio.": "head.", "modality_postprocessors.audio.": "postprocessor."}
            sub = {}
            for k, v in state.items():
                for a, b in prefixes.items():
                    if k.startswith(a):
                        sub[b + k[len(a):]] = v
            missing, unexpected = self.load_state_dict(sub, strict=False)
            missing = [k for k in missing if not k.startswith("final_layer_norm.")]
            if missing or unexpected or not sub:
                raise ValueError(f"ImageBind checkpoint does not fit the {self.preset} audio branch: "
                                 f"missing {missing[:5]}, unexpected {unexpected[:5]}")

    return ImageBindAudioTokens


_AUDIO_TOKENS_CLS = None


def audio_token_encoder(preset: str = "huge", checkpoint: str | None = None, random: bool = False):
    """ImageBind's audio branch returning patch tokens (class built on first use: torch is imported lazily).
    `checkpoint`: ImageBind's `imagebind_huge.pth` (path, URL, or the package's default location); a download
    is only tried when its host answers (`resolve_checkpoint`), so offline machines fail at once."""
    global _AUDIO_TOKENS_CLS
    path = None
    if not random:  # find the weights before building anything
        path, problem = resolve_checkpoint(checkpoint)
        if problem:
            raise FileNotFoundError(f"ImageBind audio encoder: {problem}")
    if _AUDIO_TOKENS_CLS is None:
        _AUDIO_TOKENS_CLS = _audio_token_encoder_class()
    enc = _AUDIO_TOKENS_CLS(preset)
    if path:
        import torch

        enc.load_imagebind_state(torch.load(path, map_location="cpu", weights_only=True))
    return enc.eval()


def load_imagebind(preset: str, checkpoint: str | None, device: str, dtype, random: bool = False) -> ImageBindEncoder:
    """Build ImageBind (`preset` 'huge' is the released model), load the checkpoint unless `random`."""
    import torch

    _, SimpleTokenizer, bpe = import_imagebind()
    model = build_model(preset)
    if not random:
        path, problem = resolve_checkpoint(checkpoint)
        if problem:
            raise FileNotFoundError(problem)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model = model.to(device=device, dtype=dtype).eval()
    return ImageBindEncoder(model, SimpleTokenizer(bpe_path=bpe), device, dtype)
