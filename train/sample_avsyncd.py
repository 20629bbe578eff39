"""Animate an image with a sound: `python -m train.sample_avsyncd --image first.png --audio clip.wav --label "dog barking"
--out out.mp4 [--checkpoint out/avsyncd/final]`.

Writes the 2 s video (12 frames at 6 fps; frame 1 is the image) with the conditioning audio muxed in, and a
JSON sidecar beside it (`out.json`: image, audio, label, checkpoint, seed, guidance scale, random_weights).
The checkpoint is a training run's `final/` folder (its `avsyncd.json` names the SD / ImageBind parts it
used), or the authors' released checkpoint (`.../checkpoint-N/modules`, with `sd=` and `imagebind=`).
`text_guidance=S` adds the authors' text classifier-free guidance. Their checkpoints sample with their in-place
latent update (`inplace_update`; it alters PNDM's first PLMS step). `dtype=fp16` runs every network in float16
as their evaluation script does (CUDA only: on a CPU it falls back to float32 with a warning, and the sidecar
records the dtype that ran).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from common import cli
from common.config import load
from train.avsyncd_diffusion import DiffusionConfig

log = logging.getLogger("train.sample_avsyncd")


@dataclass
class SampleConfig:
    checkpoint: str = "out/avsyncd/final"
    """A training run's final/ folder, or the authors' checkpoint modules/ folder."""
    sd: str = ""
    """SD 1.5 (hub id or folder); empty: the one recorded in the checkpoint's avsyncd.json (else the SD 1.5 hub id)."""
    imagebind: str = ""
    """ImageBind checkpoint or audio-encoder folder; empty: as recorded in the checkpoint (else ImageBind huge)."""
    condition: str = ""
    """A condition record from `python -m pipelines.conditions` (<key>-<i>.json): fills image, audio and label when
    they are not given, and its reference / clip_start go into the output sidecar (for pipelines.evaluate)."""
    image: str = ""
    """The first frame (any image file)."""
    audio: str = ""
    """The conditioning sound (any audio/video file; its first 2 s are used)."""
    label: str = ""
    """The sound's class name (the text prompt)."""
    out: str = "out/avsyncd_sample.mp4"
    seed: int = 0
    guidance: float | None = None
    """Audio guidance eta (default: the checkpoint's, 4)."""
    steps: int | None = None
    """PNDM steps (default: the checkpoint's, 50)."""
    text_guidance: float | None = None
    """Text guidance scale (default: the checkpoint's, 1 = off; the authors' pipeline's text CFG)."""
    dtype: Literal["fp32", "fp16"] = "fp32"
    """fp16: every network in float16 (the authors' evaluation setting; CUDA only, a CPU falls back to fp32)."""
    inplace_update: bool | None = None
    """The authors' in-place latent update (it changes PNDM's first PLMS step; see train.avsyncd_diffusion.sample).
    Default: on for a checkpoint in the authors' layout, off for ours."""
    height: int | None = None
    width: int | None = None
    device: str = "auto"
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)


def parse_args(argv=None) -> SampleConfig:
    p = argparse.ArgumentParser(prog="python -m train.sample_avsyncd", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="run's final/ folder or the authors' modules/ folder")
    p.add_argument("--condition", help="condition record from pipelines.conditions (image, audio, label, reference)")
    p.add_argument("--image", help="first frame image")
    p.add_argument("--audio", help="conditioning audio (first 2 s)")
    p.add_argument("--label", help="class name used as the text prompt")
    p.add_argument("--out", help="output .mp4 (a .json sidecar is written beside it)")
    p.add_argument("--seed", type=int, help="noise seed")
    p.add_argument("--guidance", type=float, help="audio guidance eta (1 = none)")
    p.add_argument("--steps", type=int, help="PNDM steps")
    cli.add_config_arguments(p, example="guidance=8")
    a = p.parse_args(argv)
    if a.help_config:
        print(cli.settings_help(SampleConfig))
        raise SystemExit(0)
    return load(SampleConfig, a.config, a.overrides, explicit={
        "checkpoint": a.checkpoint, "condition": a.condition, "image": a.image, "audio": a.audio, "label": a.label, "out": a.out,
        "seed": a.seed, "guidance": a.guidance, "steps": a.steps})


def generate(cfg: SampleConfig) -> dict:
    from media.encode import encode_mp4
    from train.avsyncd_components import SD15, load_components
    from train.avsyncd_data import AVSyncDClipSpec, imagebind_mel, load_audio, load_image
    from train.avsyncd_diffusion import sample, sample_scheduler
    from train.models.avsyncd import segment_audio_tokens

    from evaluation.conditions import read_condition, sidecar_fields

    cond = read_condition(cli.existing_file(cfg.condition, "--condition")) if cfg.condition else {}
    image = cli.existing_file(cfg.image or cond.get("image"), "--image")
    audio_path = cli.existing_file(cfg.audio or cond.get("audio"), "--audio")
    label = cfg.label or cond.get("label") or ""
    if not label:
        raise cli.UsageError("--label is required (the sound's class name)")
    out = cli.output_file(cfg.out if cfg.out.endswith(".mp4") else cfg.out + ".mp4")
    ck = cli.existing_path(cfg.checkpoint, "--checkpoint")
    meta = json.loads((ck / "avsyncd.json").read_text()) if (ck / "avsyncd.json").is_file() else {}
    unet_dir = ck / "unet" if (ck / "unet").is_dir() else ck
    sd = cfg.sd or meta.get("sd") or SD15
    own_audio = ck / "audio_encoder"  # the authors' checkpoints carry their (frozen ImageBind) audio encoder
    imagebind = cfg.imagebind or meta.get("imagebind") or (str(own_audio) if own_audio.is_dir() else
                                                           ".checkpoints/imagebind_huge.pth")
    spec = AVSyncDClipSpec(duration=meta.get("duration", 2.0), fps=meta.get("fps", 6.0),
                           height=cfg.height or meta.get("height", 256), width=cfg.width or meta.get("width", 256))
    dcfg = DiffusionConfig(**meta["diffusion"]) if "diffusion" in meta else cfg.diffusion
    guidance = dcfg.guidance if cfg.guidance is None else cfg.guidance
    steps = dcfg.sample_steps if cfg.steps is None else cfg.steps
    text_guidance = dcfg.text_guidance if cfg.text_guidance is None else cfg.text_guidance
    try:
        wave = load_audio(str(audio_path), spec.audio_rate)[: spec.num_samples]
        first = load_image(str(image), spec)
    except Exception as e:  # unreadable media is the user's input problem
        raise cli.UsageError(f"cannot read inputs: {type(e).__name__}: {e}") from None

    from curate.models import resolve_device

    device = resolve_device(cfg.device)
    parts = load_components(sd, imagebind, str(unet_dir),
                            imagebind_preset="tiny" if meta.get("preset") == "tiny" else "huge")
    random_weights = bool(parts.random_weights or meta.get("random_weights", False))
    if random_weights:
        log.warning("RANDOM-INIT weights: this sample is noise (checks the pipeline only)")
    dtype = run_dtype(cfg.dtype, device)
    unet_cfg = unet_dir / "config.json"
    authors = unet_cfg.is_file() and json.loads(unet_cfg.read_text()).get("_class_name") != "AVSyncDUNet"
    inplace = authors if cfg.inplace_update is None else cfg.inplace_update
    parts.frozen_to(device, dtype)
    unet = parts.unet.to(device=device, dtype=dtype).eval()
    wave_t = torch.from_numpy(np.pad(wave, (0, spec.num_samples - len(wave))))
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    with torch.no_grad():
        mel = imagebind_mel(wave_t, spec)[None].to(device)
        audio = segment_audio_tokens(parts.encode_audio(mel), spec.num_frames).to(dtype)
        null = segment_audio_tokens(parts.encode_audio(torch.zeros_like(mel)), spec.num_frames).to(dtype)
        text = parts.encode_text([label]).to(dtype)
        null_text = parts.encode_text([""]).to(dtype) if text_guidance != 1.0 else None
        z1 = parts.encode_frames(first[None, None].to(device), g)[:, 0].to(dtype)
        lat = sample(unet, z1, text, audio, null, sample_scheduler(dcfg), spec.num_frames, steps, guidance, g,
                     progress=True, null_text=null_text, text_guidance=text_guidance, inplace_update=inplace)
        frames = parts.decode_latents(lat)[0]  # [F, 3, H, W] in [0, 1]
    video = (frames.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    out.write_bytes(encode_mp4(video, spec.fps, wave_t.numpy(), spec.audio_rate))
    sidecar = out.with_suffix(".json")
    info = {**sidecar_fields(cond), "image": str(image), "audio": str(audio_path), "label": label, "checkpoint": str(ck),
            "seed": cfg.seed, "guidance_scale": guidance, "text_guidance_scale": text_guidance,
            "dtype": "fp16" if dtype == torch.float16 else "fp32", "inplace_update": inplace, "steps": steps, "random_weights": random_weights,
            "fps": spec.fps, "num_frames": spec.num_frames, "height": spec.height, "width": spec.width,
            "video": str(out)}
    sidecar.write_text(json.dumps(info, indent=1))
    print(f"saved to {out} (+ {sidecar.name})")
    return {"video": out, "sidecar": sidecar, "frames": frames, "latents": lat, **info}


def run_dtype(name: str, device) -> torch.dtype:
    """The dtype sampling runs in: fp16 needs CUDA (CPU half convolutions are slow or missing), so a CPU falls
    back to float32 and says so."""
    if name == "fp32":
        return torch.float32
    if name != "fp16":
        raise cli.UsageError(f"dtype must be fp32 or fp16, got {name!r}")
    if torch.device(device).type != "cuda":
        log.warning("dtype=fp16 needs CUDA; sampling on %s in float32 instead", device)
        return torch.float32
    return torch.float16


def main(argv=None) -> int:
    def body():
        cfg = parse_args(argv)
        cli.setup_logging()
        generate(cfg)
        return 0

    return cli.run_main(body)


if __name__ == "__main__":
    raise SystemExit(main())
