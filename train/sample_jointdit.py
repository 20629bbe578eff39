r"""Animate and sound an image with a trained JointDiT checkpoint: writes a 2 s mp4 with its audio track.

Uses the checkpoint's EMA weights (if it has them) and the diffusion settings it was trained with (P_mean,
P_std, ...), its noise augmentation and frame size.

    python -m train.sample_jointdit --checkpoint out/jointdit/checkpoint-001000 --image first_frame.png \
        --out clip.mp4 --guidance jointcfg_star --scale 1.5 --steps 25
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("train.sample_jointdit")


def load_image(path: str, height: int, width: int) -> torch.Tensor:
    """Image file -> [1, 3, H, W] in [-1, 1] (resize to cover + centre crop)."""
    import av

    from train.data import resize_center_crop

    with av.open(path) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 127.5 - 1
    return resize_center_crop(x, height, width).clamp(-1, 1)


@torch.no_grad()
def generate(model, frozen, image: torch.Tensor, spec, guidance="jointcfg_star", scale=1.5, steps=25, seed=0,
             motion_bucket_id=127, noise_aug=0.02, progress=None, diffusion=None):
    """image [B, 3, H, W] in [-1, 1] -> (frames uint8 [B, F, H, W, 3], audio float [B, N] at 16 kHz).
    `diffusion`: the DiffusionConfig the model was trained with (`train.jointdit.checkpoint_diffusion`)."""
    from train.diffusion import Condition, DiffusionConfig, JointDiffusion
    from train.jointdit import added_time_ids

    dev = next(model.parameters()).device
    g = torch.Generator(device=dev).manual_seed(seed)
    image = image.to(dev)
    b = image.shape[0]
    cond = Condition(frozen.encode_image(image, noise_aug, g), frozen.clip_embed(image),
                     added_time_ids(b, spec.fps, motion_bucket_id, noise_aug, dev))
    _, c, h, w = cond.image_latents.shape
    vshape = (spec.num_frames, c, h, w)
    a_ch = model.audio_unet.config.in_channels
    f_lat = spec.n_mels // 2 ** (len(frozen.audio_vae.config.block_out_channels) - 1)
    t_lat = spec.mel_frames // 2 ** (len(frozen.audio_vae.config.block_out_channels) - 1)
    model.eval()
    v, a = JointDiffusion(diffusion or DiffusionConfig()).sample(model, cond, vshape, (a_ch, t_lat, f_lat), steps, guidance, scale, g, progress)
    frames = frozen.decode_video(v)
    wav = frozen.decode_audio(a)[:, : spec.num_samples]
    frames = ((frames.permute(0, 1, 3, 4, 2) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    return frames, wav.cpu().numpy()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m train.sample_jointdit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint-NNNNNN folder written by train.jointdit")
    p.add_argument("--image", required=True, help="first frame (png/jpg)")
    p.add_argument("--out", required=True, help="output .mp4 (a .json sidecar is written beside it)")
    p.add_argument("--guidance", default="jointcfg_star", choices=["none", "cfg", "jointcfg", "jointcfg_star"],
                   help="negative branch of the guidance (default: jointcfg_star)")
    p.add_argument("--scale", type=float, default=1.5, help="w in D + w (D - D_neg) (default: 1.5)")
    p.add_argument("--steps", type=int, default=25, help="sampling steps (default: 25)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--motion-bucket-id", type=int, default=None,
                   help="SVD motion bucket id (default: the one the checkpoint was trained with)")
    p.add_argument("--weights", default="ema", choices=["ema", "trainable"],
                   help="ema: the EMA weights when the checkpoint has them; trainable: the last weights (default: ema)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    a = p.parse_args(argv)
    from common.cli import UsageError, existing_file, output_file, setup_logging

    setup_logging()
    ck = Path(a.checkpoint)
    if not ck.is_dir():
        raise UsageError(f"--checkpoint {a.checkpoint!r} " + ("is not a folder" if ck.exists() else "does not exist"))
    existing_file(a.image, "--image")
    output_file(a.out, "--out")

    from curate.media import encode_mp4
    from train.data import ClipSpec
    from train.jointdit import checkpoint_diffusion, load_checkpoint, place_frozen

    if not (ck / "state.json").is_file():
        raise UsageError(f"--checkpoint {a.checkpoint!r} is not a checkpoint folder (no state.json)")
    model, frozen, state = load_checkpoint(a.checkpoint, ema=a.weights == "ema")
    if state.get("random_weights"):
        log.warning("RANDOM-INIT expert weights in %s: the output is noise (pipeline check only)", a.checkpoint)
    tc = state["train_config"]
    spec = ClipSpec(height=tc["height"], width=tc["width"])
    diffusion = checkpoint_diffusion(state)
    motion = tc.get("motion_bucket_id", 127) if a.motion_bucket_id is None else a.motion_bucket_id
    model.to(a.device)
    place_frozen(frozen, a.device)
    image = load_image(a.image, spec.height, spec.width)
    frames, wav = generate(model, frozen, image, spec, a.guidance, a.scale, a.steps, a.seed, motion,
                           tc.get("noise_aug", 0.02), diffusion=diffusion)
    data = encode_mp4(frames[0], spec.fps, np.clip(wav[0], -1, 1), spec.audio_rate)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_bytes(data)
    info = {"out": a.out, "frames": int(frames.shape[1]), "audio_seconds": wav.shape[1] / spec.audio_rate,
            "guidance": a.guidance, "scale": a.scale, "steps": a.steps, "random_weights": bool(state.get("random_weights")),
            "weights": state["weights"], "diffusion": dataclasses.asdict(diffusion), "checkpoint": str(ck)}
    Path(a.out).with_suffix(".json").write_text(json.dumps(info, indent=1))
    log.info("wrote %s", info)
    return info


def cli(argv=None) -> int:
    """`python -m train.sample_jointdit`: user mistakes are one `error:` line and exit code 2."""
    from common.cli import run_main

    def body() -> int:
        info = main(argv)
        print(f"saved to {info['out']} (+ {Path(info['out']).with_suffix('.json').name})")
        return 0

    return run_main(body)


if __name__ == "__main__":
    import sys

    sys.exit(cli())
