"""The pretrained parts of JointDiT: loading SVD img2vid and AudioLDM2 (diffusers format, hub id or local
path), the frozen encoders/decoders around the network, tiny random-init stand-ins and meta-device builds.

Expected layouts (as on the hub):
- video model (e.g. `stabilityai/stable-video-diffusion-img2vid`): `unet/`, `vae/`, `image_encoder/`
- audio model (e.g. `cvssp/audioldm2`): `unet/`, `vae/`, `vocoder/`
A folder written by `write_tiny_experts` has the same layout plus a `RANDOM_WEIGHTS` marker.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from train.models.jointdit import JointDiT, audio_unet_self_attention_only

CONFIG_DIR = Path(__file__).parent / "configs"
RANDOM_MARKER = "RANDOM_WEIGHTS"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

JOINT_PRESETS = {
    # JointDiT-owned sizes: qk width shared by both modalities, separate value width, DiT FF x4.
    "tiny": dict(block_size=1, qk_dim=32, value_dim=48, heads=4, ff_mult=2.0),
    "paper": dict(block_size=1, qk_dim=512, value_dim=1024, heads=8, ff_mult=4.0),
}


def _cfg(preset: str, name: str) -> dict:
    d = json.loads((CONFIG_DIR / preset / f"{name}.json").read_text())
    return {k: v for k, v in d.items() if not k.startswith("_")}


def _classes():
    from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from diffusers.pipelines.audioldm2.modeling_audioldm2 import AudioLDM2UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

    return dict(
        svd_unet=lambda c: UNetSpatioTemporalConditionModel(**c),
        svd_vae=lambda c: AutoencoderKLTemporalDecoder(**c),
        clip_vision=lambda c: CLIPVisionModelWithProjection(CLIPVisionConfig(**c)),
        audioldm2_unet=lambda c: AudioLDM2UNet2DConditionModel(**c),
        audioldm2_vae=lambda c: AutoencoderKL(**c),
        audioldm2_vocoder=lambda c: SpeechT5HifiGan(SpeechT5HifiGanConfig(**c)),
    )


def build_from_configs(preset: str) -> dict[str, nn.Module]:
    """All six pretrained modules from the configs in train/configs/{preset} (random init; use under
    `torch.device('meta')` for paper-size parameter counts)."""
    return {name: make(_cfg(preset, name)) for name, make in _classes().items()}


def write_tiny_experts(root: str | Path, seed: int = 0) -> tuple[str, str]:
    """Random-init tiny SVD-like and AudioLDM2-like folders in the hub layouts (for tests and CPU runs)."""
    root = Path(root)
    vdir, adir = root / "video", root / "audio"
    if (vdir / RANDOM_MARKER).exists() and (adir / RANDOM_MARKER).exists():
        return str(vdir), str(adir)
    torch.manual_seed(seed)
    m = build_from_configs("tiny")
    for d, parts in ((vdir, ("unet", "svd_unet", "vae", "svd_vae", "image_encoder", "clip_vision")),
                     (adir, ("unet", "audioldm2_unet", "vae", "audioldm2_vae", "vocoder", "audioldm2_vocoder"))):
        for sub, name in zip(parts[::2], parts[1::2]):
            m[name].save_pretrained(d / sub)
        (d / RANDOM_MARKER).write_text("random-init tiny weights: outputs are noise, for tests only\n")
    return str(vdir), str(adir)


def is_random(path: str | None) -> bool:
    return bool(path) and (Path(path) / RANDOM_MARKER).exists()


class FrozenParts(nn.Module):
    """VAEs, CLIP image encoder and vocoder (frozen) with the encode/decode steps JointDiT needs."""

    def __init__(self, video_vae, image_encoder, audio_vae, vocoder):
        super().__init__()
        self.video_vae, self.image_encoder, self.audio_vae, self.vocoder = video_vae, image_encoder, audio_vae, vocoder
        self.requires_grad_(False)
        self.eval()

    @property
    def clip_dim(self) -> int:
        return self.image_encoder.config.projection_dim

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor, generator=None) -> torch.Tensor:
        """[B, F, 3, H, W] in [-1, 1] -> scaled latents [B, F, 4, h, w]."""
        b, f = video.shape[:2]
        dist = self.video_vae.encode(video.flatten(0, 1).to(self.video_vae.dtype)).latent_dist
        z = dist.sample(generator) * self.video_vae.config.scaling_factor
        return z.reshape(b, f, *z.shape[1:]).float()

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor, noise_aug: float = 0.02, generator=None) -> torch.Tensor:
        """SVD's image latent: VAE mode of the noise-augmented first frame, unscaled."""
        noise = torch.randn(image.shape, generator=generator, device=image.device)
        x = (image + noise_aug * noise).to(self.video_vae.dtype)
        return self.video_vae.encode(x).latent_dist.mode().float()

    @torch.no_grad()
    def clip_embed(self, image: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] -> CLIP image embedding [B, 1, D] (SVD's preprocessing)."""
        size = self.image_encoder.config.image_size
        x = F.interpolate(image.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        x = (x + 1) / 2
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        x = ((x - mean) / std).to(self.image_encoder.dtype)
        return self.image_encoder(pixel_values=x).image_embeds.unsqueeze(1).float()

    @torch.no_grad()
    def encode_audio(self, mel: torch.Tensor, generator=None) -> torch.Tensor:
        """AudioLDM2 log-mel [B, 1, T, 64] -> scaled latents [B, 8, T/4, 16]."""
        dist = self.audio_vae.encode(mel.to(self.audio_vae.dtype)).latent_dist
        return (dist.sample(generator) * self.audio_vae.config.scaling_factor).float()

    @torch.no_grad()
    def decode_video(self, latents: torch.Tensor, chunk: int = 14) -> torch.Tensor:
        """[B, F, 4, h, w] -> frames [B, F, 3, H, W] in [-1, 1]."""
        b, f = latents.shape[:2]
        z = latents.flatten(0, 1) / self.video_vae.config.scaling_factor
        outs = [self.video_vae.decode(z[i : i + chunk].to(self.video_vae.dtype), num_frames=min(chunk, z.shape[0] - i)).sample
                for i in range(0, z.shape[0], chunk)]
        x = torch.cat(outs).float()
        return x.reshape(b, f, *x.shape[1:]).clamp(-1, 1)

    @torch.no_grad()
    def decode_audio(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, 8, T/4, 16] -> waveform [B, N] at 16 kHz (VAE -> mel -> HiFi-GAN vocoder)."""
        mel = self.audio_vae.decode((latents / self.audio_vae.config.scaling_factor).to(self.audio_vae.dtype)).sample
        return self.vocoder(mel.squeeze(1).to(self.vocoder.dtype)).float()


def load_experts(video_model: str, audio_model: str, dtype=torch.float32):
    """(video UNet, audio UNet without text cross-attention, FrozenParts) from diffusers-format folders
    or hub ids."""
    from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from diffusers.pipelines.audioldm2.modeling_audioldm2 import AudioLDM2UNet2DConditionModel
    from transformers import CLIPVisionModelWithProjection, SpeechT5HifiGan

    vunet = UNetSpatioTemporalConditionModel.from_pretrained(video_model, subfolder="unet")
    aunet = audio_unet_self_attention_only(AudioLDM2UNet2DConditionModel.from_pretrained(audio_model, subfolder="unet"))
    frozen = FrozenParts(
        AutoencoderKLTemporalDecoder.from_pretrained(video_model, subfolder="vae", torch_dtype=dtype),
        CLIPVisionModelWithProjection.from_pretrained(video_model, subfolder="image_encoder", torch_dtype=dtype),
        AutoencoderKL.from_pretrained(audio_model, subfolder="vae", torch_dtype=dtype),
        SpeechT5HifiGan.from_pretrained(audio_model, subfolder="vocoder", torch_dtype=dtype),
    )
    return vunet, aunet, frozen


def build_jointdit(video_unet, audio_unet, frozen: FrozenParts, preset: str, **overrides) -> JointDiT:
    kw = dict(JOINT_PRESETS[preset], clip_dim=frozen.clip_dim, num_frames=video_unet.config.num_frames)
    kw.update(overrides)
    return JointDiT.from_experts(video_unet, audio_unet, **kw)


PAPER_TABLE = {
    "VideoVAE": 97.7e6,
    "AudioVAE": 55.4e6,
    "AudioVocoder": 55.3e6,
    "CLIP+proj": 632e6,
    "A-Expert": 185e6,
    "V-Expert": 1.5e9,
    "V-Expert temporal (trainable)": 0.4e9,
    "JointBlock w/o Expert": 77.7e6,
}


def meta_parameter_table(preset: str = "paper") -> dict[str, int]:
    """Per-module parameter counts of a `preset` build on the meta device (no memory, no download)."""
    with torch.device("meta"):
        m = build_from_configs(preset)
        aunet = audio_unet_self_attention_only_meta(m["audioldm2_unet"])
        frozen = FrozenParts(m["svd_vae"], m["clip_vision"], m["audioldm2_vae"], m["audioldm2_vocoder"])
        model = build_jointdit(m["svd_unet"], aunet, frozen, preset)
    n = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    g = model.parameter_groups()
    return {
        "VideoVAE": n(frozen.video_vae),
        "AudioVAE": n(frozen.audio_vae),
        "AudioVocoder": n(frozen.vocoder),
        "CLIP+proj": n(frozen.image_encoder),
        "A-Expert": g["A-Expert (AudioLDM2 UNet, self-attn only)"],
        "A-Expert incl. text cross-attn (unused)": n(m["audioldm2_unet"]),
        "V-Expert": g["V-Expert (SVD UNet)"],
        "V-Expert temporal (trainable)": g["V-Expert temporal (trainable)"],
        "JointBlock w/o Expert": g["JointBlocks w/o expert"],
        "A image->temb projection": g["A image->temb projection"],
        "trainable total": sum(p.numel() for k, p in model.named_parameters() if k in set(model.trainable_parameter_names())),
    }


def audio_unet_self_attention_only_meta(unet):
    """Same structure as `audio_unet_self_attention_only`, built without copying weights (meta device)."""
    from diffusers.pipelines.audioldm2.modeling_audioldm2 import AudioLDM2UNet2DConditionModel

    cfg = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    cfg["cross_attention_dim"] = [[None] for _ in cfg["down_block_types"]]
    return AudioLDM2UNet2DConditionModel.from_config(cfg)


def format_table(counts: dict[str, int]) -> str:
    lines = [f"{'module':42s} {'ours':>10s} {'paper':>10s}"]
    for k, v in counts.items():
        p = PAPER_TABLE.get(k)
        lines.append(f"{k:42s} {v / 1e6:9.1f}M {'' if p is None else f'{p / 1e6:9.1f}M':>10s}")
    return "\n".join(lines)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")
