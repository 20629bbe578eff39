r"""Animate and sound an image with a trained JointDiT checkpoint: writes a 2 s mp4 with its audio track.

Uses the checkpoint's EMA weights (if it has them) and the diffusion settings it was trained with (P_mean,
P_std, ...), its noise augmentation and frame size.

    python -m train.sample_jointdit --checkpoint out/jointdit/checkpoint-001000 --image first_frame.png \
        --out clip.mp4 --guidance jointcfg_star --scale 1.5 --steps 25
    python -m pipelines.conditions --reference 'out/shards/test-*.tar' --protocol jointdit --out cond/
    python -m train.sample_jointdit --checkpoint CKPT --condition cond/KEY-0.json --out gen/KEY-0-s0.mp4 --seed 0

With --condition (a record written by pipelines.conditions) the first frame comes from the test shard and the
sidecar names the reference segment and clip, so pipelines.evaluate computes the paired metrics.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from train.diffusion import generate

log = logging.getLogger("train.sample_jointdit")


def load_image(path: str, height: int, width: int) -> torch.Tensor:
    """Image file -> [1, 3, H, W] in [-1, 1] (resize to cover + centre crop)."""
    import av

    from train.data import resize_center_crop

    with av.open(path) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 127.5 - 1
    return resize_center_crop(x, height, width).clamp(-1, 1)


@dataclass
class SampleConfig:
    checkpoint: str = ""
    """checkpoint-NNNNNN folder written by train.jointdit."""
    condition: str = ""
    """A condition record from `python -m pipelines.conditions` (<key>-<i>.json): its image is the first frame
    (unless --image is given) and its reference / clip_start / image / label go into the sidecar, so
    pipelines.evaluate pairs the sample with its ground truth."""
    image: str = ""
    """First frame (png/jpg); or take it from --condition."""
    out: str = ""
    """Output .mp4 (a .json sidecar is written beside it)."""
    guidance: Literal["none", "cfg", "jointcfg", "jointcfg_star"] = "jointcfg_star"
    """Negative branch of the guidance (JointCFG* is the paper's choice)."""
    scale: float = 1.5
    """w in D + w (D - D_neg)."""
    steps: int = 25
    """Sampling steps."""
    seed: int = 0
    """Random seed of the noise."""
    motion_bucket_id: int | None = None
    """SVD motion bucket id (default: the one the checkpoint was trained with)."""
    timestep_gamma: float | None = None
    """Timestep adjustment gamma (default: the checkpoint's)."""
    weights: Literal["ema", "trainable"] = "ema"
    """ema: the EMA weights when the checkpoint has them; trainable: the last trained weights."""
    device: str = "auto"
    """torch device (auto: cuda when available, else cpu)."""

    def __post_init__(self):  # checked when the settings are read, before any model is loaded
        if self.timestep_gamma is not None and not self.timestep_gamma > 0:
            raise ValueError(f"timestep_gamma must be > 0, got {self.timestep_gamma}")


FLAGS = ("checkpoint", "condition", "image", "out", "guidance", "scale", "steps", "seed", "motion_bucket_id",
         "timestep_gamma", "weights", "device")


def parse_args(argv=None) -> SampleConfig:
    from common.cli import add_config_arguments, settings_help
    from common.config import load

    p = argparse.ArgumentParser(prog="python -m train.sample_jointdit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="checkpoint-NNNNNN folder written by train.jointdit")
    p.add_argument("--condition", help="condition record from pipelines.conditions (first frame + reference for the sidecar)")
    p.add_argument("--image", help="first frame (png/jpg); default: the condition's image")
    p.add_argument("--out", help="output .mp4 (a .json sidecar is written beside it)")
    p.add_argument("--guidance", choices=["none", "cfg", "jointcfg", "jointcfg_star"],
                   help="negative branch of the guidance (default: jointcfg_star)")
    p.add_argument("--scale", type=float, help="w in D + w (D - D_neg) (default: 1.5)")
    p.add_argument("--steps", type=int, help="sampling steps (default: 25)")
    p.add_argument("--seed", type=int, help="random seed (default: 0)")
    p.add_argument("--motion-bucket-id", type=int, help="SVD motion bucket id (default: the one the checkpoint was trained with)")
    p.add_argument("--timestep-gamma", type=float, help="timestep adjustment (default: the checkpoint's)")
    p.add_argument("--weights", choices=["ema", "trainable"],
                   help="ema: the EMA weights when the checkpoint has them; trainable: the last weights (default: ema)")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    add_config_arguments(p, example="scale=2.0 steps=50")
    a = p.parse_args(argv)
    if a.help_config:
        print(settings_help(SampleConfig))
        raise SystemExit(0)
    return load(SampleConfig, a.config, a.overrides, explicit={k: getattr(a, k) for k in FLAGS})


def main(argv=None) -> dict:
    from common.cli import UsageError, existing_file, output_file, setup_logging
    from evaluation.conditions import read_condition, sidecar_fields

    cfg = parse_args(argv)
    setup_logging()
    if not cfg.checkpoint:
        raise UsageError("--checkpoint is required")
    ck = Path(cfg.checkpoint)
    if not ck.is_dir():
        raise UsageError(f"--checkpoint {cfg.checkpoint!r} " + ("is not a folder" if ck.exists() else "does not exist"))
    cond = read_condition(existing_file(cfg.condition, "--condition")) if cfg.condition else {}
    image_path = existing_file(cfg.image or cond.get("image"), "--image")
    if not cfg.out:
        raise UsageError("--out is required")
    output_file(cfg.out, "--out")
    from curate.models import resolve_device

    device = resolve_device(cfg.device)

    from media.encode import encode_mp4
    from train.data import ClipSpec
    from train.jointdit import checkpoint_diffusion, load_checkpoint, place_frozen

    if not (ck / "state.json").is_file():
        raise UsageError(f"--checkpoint {cfg.checkpoint!r} is not a checkpoint folder (no state.json)")
    model, frozen, state = load_checkpoint(cfg.checkpoint, ema=cfg.weights == "ema")
    if state.get("random_weights"):
        log.warning("RANDOM-INIT expert weights in %s: the output is noise (pipeline check only)", cfg.checkpoint)
    tc = state["train_config"]
    spec = ClipSpec(height=tc["height"], width=tc["width"])
    if cfg.guidance in ("jointcfg", "jointcfg_star") and not model.has_joint_blocks:
        raise UsageError(f"--guidance {cfg.guidance} needs Joint blocks; this checkpoint has none: use cfg")
    diffusion = checkpoint_diffusion(state)
    if cfg.timestep_gamma is not None:
        diffusion = dataclasses.replace(diffusion, timestep_gamma=cfg.timestep_gamma)
    motion = tc.get("motion_bucket_id", 127) if cfg.motion_bucket_id is None else cfg.motion_bucket_id
    model.to(device)
    place_frozen(frozen, device)
    image = load_image(str(image_path), spec.height, spec.width)
    frames, wav = generate(model, frozen, image, spec, cfg.guidance, cfg.scale, cfg.steps, cfg.seed, motion,
                           tc.get("noise_aug", 0.02), diffusion=diffusion)
    data = encode_mp4(frames[0], spec.fps, np.clip(wav[0], -1, 1), spec.audio_rate)
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.out).write_bytes(data)
    info = {**sidecar_fields(cond), "image": str(image_path), "out": cfg.out, "frames": int(frames.shape[1]),
            "audio_seconds": wav.shape[1] / spec.audio_rate, "guidance": cfg.guidance, "scale": cfg.scale,
            "steps": cfg.steps, "seed": cfg.seed, "timestep_gamma": diffusion.timestep_gamma,
            "random_weights": bool(state.get("random_weights")), "weights": state["weights"],
            "diffusion": dataclasses.asdict(diffusion), "checkpoint": str(ck)}
    Path(cfg.out).with_suffix(".json").write_text(json.dumps(info, indent=1))
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
