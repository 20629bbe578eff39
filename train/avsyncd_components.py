"""AVSyncD's parts, loaded from where users keep them: the frozen SD 1.5 VAE and CLIP text encoder (hub id or
local folder in the diffusers layout: `vae/`, `text_encoder/`, `tokenizer/`, `unet/`), ImageBind's audio branch
(ImageBind's `imagebind_huge.pth`, or the AVSync15 authors' `modules/audio_encoder` folder), and the AVSyncD UNet
(SD's `unet/` with fresh added layers, our own `save_pretrained` folder, or the authors' `modules/unet`).

`write_tiny_components` writes the same layout at toy size with random weights (and a `random_weights.json`
marker) so the whole chain runs offline in seconds; everything loaded from such a folder is flagged random.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from curate.models.imagebind import DEFAULT_CHECKPOINT, audio_token_encoder
from train.models.avsyncd import PRESETS, AVSyncDUNet, build_unet, load_unet, read_state_file, unet_from_sd

SD15 = "runwayml/stable-diffusion-v1-5"
RANDOM_MARKER = "random_weights.json"


@dataclass
class Components:
    unet: AVSyncDUNet
    vae: object
    text_encoder: object
    tokenizer: object
    audio_encoder: torch.nn.Module
    random_weights: bool
    sources: dict
    audio_train_mode: bool = False
    """Run ImageBind in train mode while encoding (its drop-path 0.1 active, no gradients), as the authors'
    trainer does: their audio encoder is a submodule of the trainer, which is put in train mode."""

    def frozen_to(self, device, dtype=torch.float32) -> None:
        for m in (self.vae, self.text_encoder, self.audio_encoder):
            m.to(device=device)
            if dtype != torch.float32:
                m.to(dtype=dtype)
            m.eval().requires_grad_(False)

    @torch.no_grad()
    def encode_text(self, labels: list[str]) -> torch.Tensor:
        """Class names -> CLIP last hidden states [B, 77, D] (SD's prompt encoding)."""
        tok = self.tokenizer(list(labels), padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        dev = next(self.text_encoder.parameters()).device
        return self.text_encoder(tok.input_ids.to(dev))[0]

    @torch.no_grad()
    def encode_frames(self, frames: torch.Tensor, generator=None) -> torch.Tensor:
        """[B, F, 3, H, W] in [-1, 1] -> scaled VAE latents [B, F, 4, H/8, W/8] (a sample of the posterior)."""
        b, f = frames.shape[:2]
        vae = self.vae
        x = frames.reshape(b * f, *frames.shape[2:]).to(next(vae.parameters()).dtype)
        lat = vae.encode(x).latent_dist.sample(generator) * vae.config.scaling_factor
        return lat.view(b, f, *lat.shape[1:]).float()

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, F, 4, h, w] -> frames [B, F, 3, H, W] in [0, 1]."""
        b, f = latents.shape[:2]
        vae = self.vae
        x = latents.reshape(b * f, *latents.shape[2:]).to(next(vae.parameters()).dtype) / vae.config.scaling_factor
        img = vae.decode(x).sample.float()
        return ((img + 1) / 2).clamp(0, 1).view(b, f, *img.shape[1:])

    @torch.no_grad()
    def encode_audio(self, mel: torch.Tensor, train_mode: bool | None = None) -> torch.Tensor:
        """ImageBind mel [B, 1, 128, 204] -> all audio tokens [B, 1 + 12 * 19, D]. `train_mode` (default:
        `audio_train_mode`): drop-path active for this call."""
        enc = self.audio_encoder
        p = next(enc.parameters())
        was = enc.training
        enc.train(self.audio_train_mode if train_mode is None else train_mode)
        try:
            return enc(mel.to(p.device, p.dtype))[0].float()
        finally:
            enc.train(was)


# ------------------------------------------------------------------------------------------ tiny


def tiny_tokenizer_files(folder: Path) -> None:
    """A byte-level CLIP BPE vocabulary with no merges (every character a token): 514 entries."""
    # GPT-2 / CLIP byte-to-character map: printable bytes map to themselves, the rest to 256 + n
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    chars = [chr(b) if b in printable else chr(next(extra)) for b in range(256)]
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def write_tiny_components(folder: str | Path, seed: int = 0) -> Path:
    """SD-layout folder with tiny random-init vae / text_encoder / tokenizer / unet / audio_encoder."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from transformers.utils import logging as tlog

    tlog.disable_progress_bar()
    folder = Path(folder)
    torch.manual_seed(seed)
    AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8,
                  sample_size=32).save_pretrained(folder / "vae")
    tiny_tokenizer_files(folder / "tokenizer")
    tok = CLIPTokenizer(str(folder / "tokenizer" / "vocab.json"), str(folder / "tokenizer" / "merges.txt"),
                        model_max_length=77)
    tok.save_pretrained(folder / "tokenizer")
    CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=77, projection_dim=32,
                                 bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id)).save_pretrained(folder / "text_encoder")
    UNet2DConditionModel(**{k: v for k, v in PRESETS["tiny"].items() if k != "audio_cross_attention_dim"}
                         ).save_pretrained(folder / "unet")  # the "SD" UNet: AVSyncD's added layers start fresh
    save_audio_encoder(audio_token_encoder("tiny", random=True), folder / "audio_encoder")
    (folder / RANDOM_MARKER).write_text(json.dumps({"random_weights": True, "seed": seed}))
    return folder


def save_audio_encoder(enc: torch.nn.Module, folder: str | Path) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": "ImageBindAudioTokens", "preset": enc.preset}))
    save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, str(folder / "diffusion_pytorch_model.safetensors"))


def load_audio_encoder(source: str, preset: str = "huge") -> torch.nn.Module:
    """A saved audio-encoder folder (ours, or the authors' `modules/audio_encoder`: same key names), else an
    ImageBind checkpoint (path or URL)."""
    p = Path(source)
    if p.is_dir():
        cfg = json.loads((p / "config.json").read_text()) if (p / "config.json").is_file() else {}
        enc = audio_token_encoder(cfg.get("preset", preset), random=True)
        state = read_state_file(p)
        missing, unexpected = enc.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"audio encoder {source!r} does not fit ImageBind {enc.preset}: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        return enc.eval()
    return audio_token_encoder(preset, checkpoint=source)


# ------------------------------------------------------------------------------------------ loading


def is_random(folder: str | Path) -> bool:
    return (Path(folder) / RANDOM_MARKER).is_file()


def load_components(sd: str = SD15, imagebind: str = DEFAULT_CHECKPOINT, unet: str = "",
                    imagebind_preset: str = "huge", groupnorm_over_frames: bool = False, added_init: str = "identity",
                    audio_train_mode: bool = False) -> Components:
    """Load every part; a missing weight fails at once with the source that was tried and what to pass.
    `groupnorm_over_frames` / `added_init` apply to a UNet started from SD's (no `unet`); a loaded UNet keeps
    its own (the authors' layout: 5-D GroupNorm and their init)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    from transformers.utils import logging as tlog

    from common.hub import prepare_hub

    tlog.disable_progress_bar()

    local = Path(sd).is_dir()
    if not local:
        prepare_hub()
    try:
        vae = AutoencoderKL.from_pretrained(sd, subfolder="vae")
        text_encoder = CLIPTextModel.from_pretrained(sd, subfolder="text_encoder")
        tokenizer = CLIPTokenizer.from_pretrained(sd, subfolder="tokenizer")
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"could not load Stable Diffusion 1.5 parts from {sd!r}"
                                + f" ({type(e).__name__}: {str(e).splitlines()[0][:200]}); give a local folder "
                                  "in the diffusers layout (vae/, text_encoder/, tokenizer/, unet/)") from None
    if local and (Path(sd) / "audio_encoder").is_dir() and imagebind in ("", DEFAULT_CHECKPOINT):
        imagebind = str(Path(sd) / "audio_encoder")
    audio = load_audio_encoder(imagebind, imagebind_preset)
    try:
        net = load_unet(unet) if unet else unet_from_sd(sd, audio_cross_attention_dim=audio.dim,
                                                        groupnorm_over_frames=groupnorm_over_frames,
                                                        added_init=added_init)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"could not load the AVSyncD UNet from {unet or sd!r} ({type(e).__name__}: "
                                f"{str(e).splitlines()[0][:200]})") from None
    if net.config.audio_cross_attention_dim != audio.dim:
        raise ValueError(f"UNet expects {net.config.audio_cross_attention_dim}-d audio tokens, the audio encoder "
                         f"gives {audio.dim}-d")
    random = (local and is_random(sd)) or (bool(unet) and Path(unet).is_dir() and is_random(Path(unet)))
    return Components(net, vae, text_encoder, tokenizer, audio, random,
                      {"sd": sd, "imagebind": imagebind, "unet": unet or f"{sd} (unet/, added layers fresh)"},
                      audio_train_mode)


def param_table(preset: str = "paper") -> dict[str, int]:
    """Parameter counts of the UNet built on the meta device (no memory): total / frozen SD / each added family."""
    m = build_unet(preset, device="meta")
    rows = {"total": 0, "frozen_sd": 0, "conv_temp": 0, "attn_audio": 0, "attn_temp": 0, "norm_audio": 0,
            "norm_temp": 0, "pos_embedding_temp": 0}
    for n, p in m.named_parameters():
        rows["total"] += p.numel()
        fam = next((f for f in ("conv_temp", "attn_audio", "attn_temp", "norm_audio", "norm_temp", "pos_embedding_temp")
                    if f in n), None)
        rows[fam or "frozen_sd"] += p.numel()
    rows["trainable"] = rows["total"] - rows["frozen_sd"]
    return rows


__all__ = ["Components", "SD15", "load_components", "write_tiny_components", "load_audio_encoder",
           "save_audio_encoder", "is_random", "param_table"]
