"""AVSyncD's denoiser: Stable Diffusion 1.5's 2-D UNet animated into an audio-synchronized video UNet.

AVSync15 (ECCV 2024) Sec. 4.2 / supplement Sec. 3.2. `AVSyncDUNet` *is* a diffusers `UNet2DConditionModel`
(frozen SD 1.5 weights, same module names) run on the frames of a batch of videos as one big image batch,
with four additions, all trainable and all initialised so that they change nothing at first:
- **first-frame temporal convolution** on conv_in, conv_out and every ResNet / down- / up-sampling conv:
  after the frozen 2-D conv, y_t += Linear([y_1, y_{t-1}, y_t]) (kernel 3 over frames (1, t-1, t), per
  pixel; zero-initialised) -- `FirstFrameConv2d`, a `nn.Conv2d` that keeps the frozen weight;
- **first-frame attention**: the frozen spatial self-attention (`attn1`) takes its keys/values from frame 1
  for every frame -- `FirstFrameAttnProcessor`, a diffusers attention processor on the unchanged module;
- **audio cross-attention** (`attn_audio`, after `attn1`) on ImageBind audio tokens: the 12 x 19 patch grid
  is cut into 12 overlapping time segments, one per frame, each with the global (CLS) token prepended;
- **temporal attention** (`attn_temp`, after the text cross-attention) over frames, with a sinusoidal
  frame-index embedding passed through a learnable 2-layer projection (`pos_embedding_temp`).
The module names and shapes are those of the authors' released checkpoints (lzhangbj/ASVA
`AudioUNet3DConditionModel`: `*.conv_temp`, `*.attn_audio`, `*.norm_audio`, `*.attn_temp`, `*.norm_temp`,
`*.pos_embedding_temp`), so `load_asva_unet` loads their `modules/unet` folder without renaming. Two config
switches reproduce the authors' network exactly (both on automatically when their checkpoint layout is loaded):
- `groupnorm_over_frames`: their ResNet GroupNorms and `conv_norm_out` run on `b c f h w` tensors, so the
  statistics pool all frames of a video (`FrameGroupNorm`); off (the default for training from SD 1.5), each
  frame is normalised alone, as SD 1.5 was trained;
- `added_init`: "identity" (default) zero-initialises the `attn_audio` / `attn_temp` output projections
  (weight and bias), so a fresh model is exactly SD 1.5 with first-frame attention; "asva" is the authors'
  init: only `attn_temp.to_out.0.weight` is zero, `attn_audio` keeps its random init, biases their default.
See `docs/avsyncd.md` and `docs/authors_code/avsyncd.md`.

Tensors: videos are `[B, F, C, H, W]` latents; text `[B, L, D]` (one prompt per video); audio tokens
`[B, F, S, Da]` (S = 1 + 12 x 2 for ImageBind huge, from `segment_audio_tokens`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from torch import nn

TRAINABLE_MARKERS = ("_temp", "_audio")
"""A parameter is trainable iff its name contains one of these (the authors' `trainable_modules`)."""

PRESETS = {
    # SD 1.5's UNet (runwayml/stable-diffusion-v1-5, unet/config.json) + ImageBind huge's 768-d audio tokens
    "paper": dict(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        norm_num_groups=32, cross_attention_dim=768, attention_head_dim=8, audio_cross_attention_dim=768,
    ),
    # the same layout at toy size, random init, for tests
    "tiny": dict(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=8, cross_attention_dim=32, attention_head_dim=4, audio_cross_attention_dim=32,
    ),
}

# the authors' 3-D block names -> diffusers' 2-D blocks with the same children
ASVA_BLOCK_TYPES = {
    "FFSpatioAudioTempCrossAttnDownBlock3D": "CrossAttnDownBlock2D",
    "FFSpatioTempResDownBlock3D": "DownBlock2D",
    "FFSpatioTempResUpBlock3D": "UpBlock2D",
    "FFSpatioAudioTempCrossAttnUpBlock3D": "CrossAttnUpBlock2D",
}


class VideoContext:
    """Per-call state shared by the added layers (frames per video, per-frame audio tokens, GroupNorm mode)."""

    def __init__(self):
        self.num_frames: int = 1
        self.audio: torch.Tensor | None = None
        self.groupnorm_over_frames: bool = False


# ------------------------------------------------------------------------------------- audio tokens


def segment_starts(length: int, n_segment: int) -> tuple[int, np.ndarray]:
    """(segment size, start indices): `n_segment` windows of ceil(length / n_segment) over `length` steps,
    evenly spread (neighbours overlap when it does not divide)."""
    size = int(math.ceil(length / n_segment))
    return size, np.round(np.linspace(0, length - size, n_segment)).astype(np.int64)


def segment_audio_tokens(tokens: torch.Tensor, num_frames: int, grid: tuple[int, int] = (12, 19)) -> torch.Tensor:
    """ImageBind audio tokens [B, 1 + nf * nt, D] (CLS, then the frequency x time patch grid, frequency-major)
    -> per-frame tokens [B, F, 1 + nf * size, D]: frame f sees the global token and the patches of time
    segment f. The same tokens as the authors' segment masks select, gathered instead of masked."""
    nf, nt = grid
    b, n, d = tokens.shape
    if n != 1 + nf * nt:
        raise ValueError(f"expected 1 + {nf}x{nt} audio tokens, got {n}")
    size, starts = segment_starts(nt, num_frames)
    cols = torch.as_tensor(starts)[:, None] + torch.arange(size)[None]  # [F, size]
    idx = 1 + torch.arange(nf)[None, :, None] * nt + cols[:, None, :]  # [F, nf, size]
    idx = torch.cat([torch.zeros(num_frames, 1, dtype=torch.long), idx.reshape(num_frames, -1)], 1).to(tokens.device)
    return tokens[:, idx]  # [B, F, 1 + nf * size, D]


# ------------------------------------------------------------------------------------- added layers


class FirstFrameConv2d(nn.Conv2d):
    """A frozen 2-D conv followed by a zero-initialised temporal mix y_t += W [y_1, y_{t-1}, y_t] + b."""

    def __init__(self, conv: nn.Conv2d, video: VideoContext):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                         padding=conv.padding, bias=conv.bias is not None, device="meta")
        self.weight, self.bias = conv.weight, conv.bias  # the frozen conv, shared, not copied
        c = conv.out_channels
        self.conv_temp = nn.Linear(3 * c, c, device=conv.weight.device, dtype=conv.weight.dtype)
        nn.init.zeros_(self.conv_temp.weight)
        nn.init.zeros_(self.conv_temp.bias)
        self._video = [video]  # a list keeps it out of the module tree

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        f = self._video[0].num_frames
        bf, c, h, w = y.shape
        y5 = y.view(bf // f, f, c, h, w).permute(0, 1, 3, 4, 2)  # [B, F, h, w, C]
        prev = torch.cat([y5[:, :1], y5[:, :-1]], 1)
        z = torch.cat([y5[:, :1].expand_as(y5), prev, y5], -1)
        return (y5 + self.conv_temp(z)).permute(0, 1, 4, 2, 3).reshape(bf, c, h, w)


class FrameGroupNorm(nn.GroupNorm):
    """A GroupNorm on a batch of frames `[B*F, C, H, W]` that, when the video context says so, pools its
    statistics over the F frames of each video (the authors' GroupNorm on `b c f h w`); else per frame."""

    def __init__(self, norm: nn.GroupNorm, video: VideoContext):
        super().__init__(norm.num_groups, norm.num_channels, eps=norm.eps, affine=norm.affine, device="meta")
        self.weight, self.bias = norm.weight, norm.bias  # the frozen SD parameters, shared
        self._video = [video]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        video = self._video[0]
        if not video.groupnorm_over_frames or video.num_frames == 1:
            return super().forward(x)
        f = video.num_frames
        bf, c = x.shape[:2]
        x5 = x.view(bf // f, f, c, *x.shape[2:]).transpose(1, 2)  # [B, C, F, H, W]
        y = F.group_norm(x5, self.num_groups, self.weight, self.bias, self.eps)
        return y.transpose(1, 2).reshape(x.shape)


class FirstFrameAttnProcessor:
    """Spatial self-attention whose keys and values come from each video's first frame (queries from every
    frame). For frame 1 it is the module's ordinary self-attention."""

    def __init__(self, video: VideoContext):
        self.video = video

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        f = self.video.num_frames
        bf, n, c = hidden_states.shape
        b = bf // f
        first = hidden_states.view(b, f, n, c)[:, 0]
        q, k, v = attn.to_q(hidden_states), attn.to_k(first), attn.to_v(first)
        heads = attn.heads
        d = q.shape[-1] // heads
        q = q.reshape(b, f * n, heads, d).transpose(1, 2)
        k = k.view(b, n, heads, d).transpose(1, 2)
        v = v.view(b, n, heads, d).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
        o = o.transpose(1, 2).reshape(bf, n, heads * d)
        return attn.to_out[1](attn.to_out[0](o))


class AVSyncTransformerBlock(nn.Module):
    """SD's BasicTransformerBlock (its own norm1/attn1/norm2/attn2/norm3/ff modules, frozen) with audio
    cross-attention after `attn1` and temporal attention after `attn2`:
    h += attn1(n1 h); h += attn_audio(n_a h, audio_f); h += attn2(n2 h, text);
    h += attn_temp(n_t(h + pos(frame))) over frames; h += ff(n3 h)."""

    def __init__(self, block: nn.Module, audio_dim: int, video: VideoContext, added_init: str = "identity"):
        super().__init__()
        if getattr(block, "norm_type", "layer_norm") != "layer_norm" or block.only_cross_attention or block.pos_embed is not None:
            raise ValueError("AVSyncD supports SD 1.5's transformer blocks (layer_norm, self + cross attention)")
        a = block.attn1
        dim, heads, dim_head = a.query_dim, a.heads, a.inner_dim // a.heads
        self.norm1, self.attn1 = block.norm1, block.attn1
        self.norm_audio = nn.LayerNorm(dim)
        self.attn_audio = Attention(query_dim=dim, cross_attention_dim=audio_dim, heads=heads, dim_head=dim_head)
        self.norm2, self.attn2 = block.norm2, block.attn2
        self.pos_proj_temp = Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.pos_embedding_temp = TimestepEmbedding(dim, dim, act_fn="silu")
        self.attn_temp = Attention(query_dim=dim, heads=heads, dim_head=dim_head)
        self.norm_temp = nn.LayerNorm(dim)
        self.norm3, self.ff = block.norm3, block.ff
        if added_init == "identity":
            for out in (self.attn_audio.to_out[0], self.attn_temp.to_out[0]):
                nn.init.zeros_(out.weight)
                nn.init.zeros_(out.bias)
        elif added_init == "asva":  # the authors': only the temporal attention's output weight starts at zero
            nn.init.zeros_(self.attn_temp.to_out[0].weight)
        else:
            raise ValueError(f"added_init must be 'identity' or 'asva', got {added_init!r}")
        self.attn1.set_processor(FirstFrameAttnProcessor(video))
        self._video = [video]

    def forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                timestep=None, cross_attention_kwargs=None, class_labels=None, *args, **kwargs):
        video = self._video[0]
        h = hidden_states
        h = h + self.attn1(self.norm1(h))
        if video.audio is not None:
            h = h + self.attn_audio(self.norm_audio(h), encoder_hidden_states=video.audio)
        h = h + self.attn2(self.norm2(h), encoder_hidden_states=encoder_hidden_states,
                           attention_mask=encoder_attention_mask)
        f = video.num_frames
        bf, n, c = h.shape
        pos = self.pos_embedding_temp(self.pos_proj_temp(torch.arange(f, device=h.device)).to(h.dtype))  # [F, C]
        t = h.view(bf // f, f, n, c).transpose(1, 2).reshape(-1, f, c)  # [(B n), F, C]
        t = t + self.attn_temp(self.norm_temp(t + pos))
        h = t.view(bf // f, n, f, c).transpose(1, 2).reshape(bf, n, c)
        return h + self.ff(self.norm3(h))


# ------------------------------------------------------------------------------------- the UNet


class AVSyncDUNet(UNet2DConditionModel):
    """SD 1.5's UNet2DConditionModel with AVSyncD's trainable video/audio layers (module docstring)."""

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        # the parent's config keys that AVSyncD keeps at SD 1.5's values are saved (its forward reads them)
        # but are not constructor arguments: drop them quietly instead of warning on every load
        extra = set(cls._get_init_keys(UNet2DConditionModel)) - set(cls._get_init_keys(cls))
        return super().extract_init_dict({k: v for k, v in config_dict.items() if k not in extra}, **kwargs)

    @register_to_config
    def __init__(self, sample_size: int = 64, in_channels: int = 4, out_channels: int = 4,
                 down_block_types: tuple = PRESETS["paper"]["down_block_types"],
                 up_block_types: tuple = PRESETS["paper"]["up_block_types"],
                 block_out_channels: tuple = (320, 640, 1280, 1280), layers_per_block: int = 2,
                 norm_num_groups: int = 32, cross_attention_dim: int = 768, attention_head_dim: int = 8,
                 audio_cross_attention_dim: int = 768, groupnorm_over_frames: bool = False,
                 added_init: str = "identity"):
        super().__init__(sample_size=sample_size, in_channels=in_channels, out_channels=out_channels,
                         down_block_types=tuple(down_block_types), up_block_types=tuple(up_block_types),
                         block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
                         norm_num_groups=norm_num_groups, cross_attention_dim=cross_attention_dim,
                         attention_head_dim=attention_head_dim)
        video = VideoContext()
        self._video = [video]
        for name, module in list(self.named_modules()):
            for child_name, child in list(module.named_children()):
                full = f"{name}.{child_name}" if name else child_name
                if type(child) is nn.Conv2d and _is_video_conv(full):
                    setattr(module, child_name, FirstFrameConv2d(child, video))
                if type(child) is nn.GroupNorm and _is_video_norm(full):
                    setattr(module, child_name, FrameGroupNorm(child, video))
                if child_name == "transformer_blocks":
                    for i, blk in enumerate(child):
                        child[i] = AVSyncTransformerBlock(blk, audio_cross_attention_dim, video, added_init)

    @property
    def video(self) -> VideoContext:
        return self._video[0]

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if any(m in n for m in TRAINABLE_MARKERS)]

    def set_trainable(self) -> None:
        """Freeze SD 1.5; train the added layers only."""
        names = {n for n, _ in self.trainable_parameters()}
        for n, p in self.named_parameters():
            p.requires_grad_(n in names)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.trainable_parameters()}

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                audio_tokens: torch.Tensor | None = None, return_dict: bool = True):
        """sample [B, F, C, H, W]; timestep scalar or [B]; text [B, L, D]; audio tokens [B, F, S, Da] (None:
        no audio attention) -> eps [B, F, C, H, W] (in `.sample` when return_dict)."""
        b, f = sample.shape[:2]
        t = torch.as_tensor(timestep, device=sample.device)
        t = (t.expand(b) if t.ndim == 0 else t).repeat_interleave(f)
        # The added layers read these during this call and, under gradient checkpointing, again when backward
        # recomputes a block; so they stay set until the next call replaces them.
        video = self.video
        video.num_frames = f
        video.groupnorm_over_frames = bool(self.config.groupnorm_over_frames)
        video.audio = None if audio_tokens is None else audio_tokens.reshape(b * f, *audio_tokens.shape[2:]).to(sample.dtype)
        out = super().forward(sample.reshape(b * f, *sample.shape[2:]), t, encoder_hidden_states.repeat_interleave(f, 0)).sample
        out = out.view(b, f, *out.shape[1:])
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)


def _is_video_conv(name: str) -> bool:
    """The convs the authors made first-frame temporal: conv_in/out and every ResNet / resampler conv."""
    last = name.rsplit(".", 1)[-1]
    if name in ("conv_in", "conv_out"):
        return True
    if ".resnets." in name and last in ("conv1", "conv2", "conv_shortcut"):
        return True
    return (".downsamplers." in name or ".upsamplers." in name) and last == "conv"


def _is_video_norm(name: str) -> bool:
    """The GroupNorms the authors apply to 5-D tensors: every ResNet's norm1/norm2 and conv_norm_out (the
    transformers' input GroupNorm runs per frame in their code too)."""
    return name == "conv_norm_out" or (".resnets." in name and name.rsplit(".", 1)[-1] in ("norm1", "norm2"))


# ------------------------------------------------------------------------------------- loading


def build_unet(preset: str = "tiny", device=None, **switches) -> AVSyncDUNet:
    """A fresh UNet of a preset; `switches`: groupnorm_over_frames, added_init."""
    if preset not in PRESETS:
        raise ValueError(f"unknown AVSyncD preset {preset!r}; known: {', '.join(PRESETS)}")
    if device is None:
        return AVSyncDUNet(**PRESETS[preset], **switches)
    with torch.device(device):
        return AVSyncDUNet(**PRESETS[preset], **switches)


def unet_from_sd(path_or_id: str, subfolder: str = "unet", audio_cross_attention_dim: int = 768,
                 groupnorm_over_frames: bool = False, added_init: str = "identity") -> AVSyncDUNet:
    """AVSyncD from an SD 1.5 checkpoint (hub id or local folder, diffusers layout `unet/`): SD weights loaded,
    added layers at their (identity) init. Fails if any SD weight is missing or unexpected."""
    sd = UNet2DConditionModel.from_pretrained(path_or_id, subfolder=subfolder)
    keep = {k: sd.config[k] for k in ("sample_size", "in_channels", "out_channels", "down_block_types",
                                      "up_block_types", "block_out_channels", "layers_per_block", "norm_num_groups",
                                      "cross_attention_dim", "attention_head_dim")}
    model = AVSyncDUNet(**keep, audio_cross_attention_dim=audio_cross_attention_dim,
                        groupnorm_over_frames=groupnorm_over_frames, added_init=added_init)
    differ = [k for k, v in sd.config.items() if not k.startswith("_") and k in model.config
              and json.dumps(v, default=str) != json.dumps(model.config[k], default=str)]
    if differ:
        raise ValueError(f"{path_or_id!r} is not an SD 1.5-style UNet: unsupported settings {differ}")
    load_sd_weights(model, sd.state_dict())
    return model


def load_sd_weights(model: AVSyncDUNet, state: dict[str, torch.Tensor]) -> None:
    """Load a UNet2DConditionModel state dict; only AVSyncD's added layers may be missing."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in missing if not any(m in k for m in TRAINABLE_MARKERS)]
    if bad or unexpected:
        raise ValueError(f"SD UNet weights do not fit AVSyncD: missing {bad[:5]}, unexpected {unexpected[:5]}")


def asva_config(config: dict) -> dict:
    """The authors' `AudioUNet3DConditionModel` config.json -> AVSyncDUNet arguments."""
    def blocks(types):
        try:
            return tuple(ASVA_BLOCK_TYPES[t] for t in types)
        except KeyError as e:
            raise ValueError(f"unknown ASVA block type {e.args[0]!r}") from None

    return dict(sample_size=config.get("sample_size") or 64, in_channels=config.get("in_channels", 4),
                out_channels=config.get("out_channels", 4), down_block_types=blocks(config["down_block_types"]),
                up_block_types=blocks(config["up_block_types"]),
                block_out_channels=tuple(config.get("block_out_channels", (320, 640, 1280, 1280))),
                layers_per_block=config.get("layers_per_block", 2), norm_num_groups=config.get("norm_num_groups", 32),
                cross_attention_dim=config.get("cross_attention_dim", 768),
                attention_head_dim=config.get("attention_head_dim", 8),
                audio_cross_attention_dim=config.get("audio_cross_attention_dim", 768),
                groupnorm_over_frames=True, added_init="asva")  # their network, exactly


def read_state_file(folder: Path) -> dict[str, torch.Tensor]:
    """The weights of a diffusers model folder (safetensors preferred, else the .bin pickle)."""
    st = folder / "diffusion_pytorch_model.safetensors"
    if st.is_file():
        from safetensors.torch import load_file

        return load_file(str(st))
    pt = folder / "diffusion_pytorch_model.bin"
    if pt.is_file():
        return torch.load(pt, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"no diffusion_pytorch_model.safetensors or .bin in {str(folder)!r}")


def load_asva_unet(path: str | Path) -> AVSyncDUNet:
    """The authors' released AVSyncD UNet: `path` is their checkpoint's `modules` folder (or its `unet`
    subfolder, or the run folder holding `ckpts/checkpoint-N/modules`). Every key must match. The model is
    built with `groupnorm_over_frames=True` (their GroupNorms pool all frames) and their init."""
    p = Path(path)
    if (p / "unet" / "config.json").is_file():
        p = p / "unet"
    elif (p / "ckpts").is_dir():
        cks = sorted((p / "ckpts").glob("checkpoint-*/modules/unet"), key=lambda q: int(q.parent.parent.name.split("-")[-1]))
        if not cks:
            raise FileNotFoundError(f"no ckpts/checkpoint-*/modules/unet under {str(path)!r}")
        p = cks[-1]
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{str(path)!r} holds no AVSyncD UNet (expected modules/unet/config.json)")
    model = AVSyncDUNet(**asva_config(json.loads((p / "config.json").read_text())))
    state = read_state_file(p)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {str(p)!r} does not fit AVSyncD: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def load_unet(path: str | Path) -> AVSyncDUNet:
    """Our own `save_pretrained` folder, or the authors' checkpoint layout."""
    p = Path(path)
    cfg = p / "config.json"
    if cfg.is_file() and json.loads(cfg.read_text()).get("_class_name") == AVSyncDUNet.__name__:
        return AVSyncDUNet.from_pretrained(str(p))
    return load_asva_unet(p)


__all__ = ["AVSyncDUNet", "FirstFrameConv2d", "FrameGroupNorm", "FirstFrameAttnProcessor", "AVSyncTransformerBlock", "VideoContext",
           "PRESETS", "TRAINABLE_MARKERS", "segment_audio_tokens", "segment_starts", "build_unet", "unet_from_sd",
           "load_sd_weights", "load_asva_unet", "load_unet", "asva_config"]
