r"""Train JointDiT on curated shards (or cached latents), on one process or many (accelerate / torchrun).

    python -m train.jointdit --shards 'out/shards/*.tar' --preset tiny --steps 200
    accelerate launch -m train.jointdit --shards ... --preset paper \
        --video-model stabilityai/stable-video-diffusion-img2vid --audio-model cvssp/audioldm2 \
        --mixed-precision bf16 --gradient-checkpointing
    torchrun --nproc_per_node 8 -m train.jointdit --config my.yaml --resume latest
    python -m train.jointdit --preset paper --dry-run --print-params   # meta device, no download

Every process reads its own part of the shards (each DataLoader worker its own part of that), keeps an EMA
of the trainable weights, follows a warm-up + schedule of the learning rate, and can accumulate gradients;
checkpoints hold everything `--resume` needs to continue exactly where the run stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

log = logging.getLogger("train.jointdit")

PRESET_DEFAULTS = {
    "tiny": dict(height=32, width=32, batch_size=2, lr=1e-3, steps=200, num_workers=0, lr_warmup_steps=0),
    "paper": dict(height=256, width=256, batch_size=4, lr=1e-5, steps=100_000, num_workers=4, lr_warmup_steps=1000),
}
LR_SCHEDULERS = ("constant_with_warmup", "constant", "cosine", "linear")


@dataclass
class TrainConfig:
    shards: str | None = None
    """Curated WebDataset shards (glob / brace pattern)."""
    latents: str | None = None
    """Latent shards from `python -m train.cache_latents` (replaces --shards: no VAE/CLIP per step)."""
    preset: str = "tiny"
    """Expert sizes: tiny (random-init stand-ins, CPU) or paper (SVD + AudioLDM2)."""
    video_model: str | None = None
    """SVD img2vid in diffusers format (hub id or path); tiny preset: random-init stand-in if unset."""
    audio_model: str | None = None
    """AudioLDM2 in diffusers format (hub id or path); tiny preset: random-init stand-in if unset."""
    out_dir: str = "out/jointdit"
    """Run folder: checkpoint-NNNNNN/ folders are written here."""
    steps: int | None = None
    """Training steps (optimizer updates)."""
    batch_size: int | None = None
    """Clips per step and process."""
    lr: float | None = None
    """AdamW peak learning rate (reached after the warm-up; see --lr-scheduler)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    height: int | None = None
    """Frame height in pixels (the paper: 256)."""
    width: int | None = None
    """Frame width in pixels (the paper: 256)."""
    lambda_video: float = 1.0
    """Weight of the video loss (lambda1)."""
    lambda_audio: float = 1.0
    """Weight of the audio loss (lambda2)."""
    p_mean: float = 0.7
    """EDM log-sigma mean of the video noise levels (SVD's value; the paper does not give it)."""
    p_std: float = 1.6
    """EDM log-sigma spread of the video noise levels (SVD's value)."""
    cond_drop: float = 0.1
    """Probability of dropping the image condition in training (for guidance; the paper: 10 %)."""
    noise_aug: float = 0.02
    """Noise added to the conditioning image latent (SVD's noise augmentation)."""
    motion_bucket_id: int = 127
    """SVD motion bucket id passed as an added time id."""
    mixed_precision: str = "no"
    """accelerate mixed precision: no, fp16 or bf16."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, more time)."""
    grad_clip: float = 1.0
    """Clip the gradient norm to this value (0: off)."""
    shuffle: int = 64
    """Shuffle: shard order per epoch plus a buffer of this many samples per reader (0: read in order)."""
    num_workers: int | None = None
    """DataLoader worker processes."""
    log_every: int = 10
    """Log loss and steps/s every N steps."""
    save_every: int = 1000
    """Write a checkpoint every N steps (and at the end)."""
    seed: int = 0
    """Random seed (each process adds its rank)."""
    resume: str | None = None
    """'latest' (the newest checkpoint in --out-dir; none: start fresh) or a checkpoint folder: restores weights,
    optimizer, schedule, EMA, random states and the data position."""
    progress: bool = True
    """Show a progress bar."""
    joint: dict = field(default_factory=dict)
    """Overrides of the JointDiT sizes (block_size, qk_dim, value_dim, heads, ff_mult)."""
    # training at scale (the paper gives none of these: the values are the project's choice)
    ema: bool = True
    """Keep an exponential moving average of the trainable weights (ema.safetensors; the sampler uses it)."""
    ema_decay: float = 0.9999
    """EMA decay (project's choice; the paper gives none); update n uses min(decay, (1 + n) / (10 + n))."""
    lr_scheduler: str = "constant_with_warmup"
    """Learning-rate schedule (diffusers get_scheduler), in optimizer updates: constant_with_warmup, constant,
    cosine or linear (cosine and linear decay to 0 at --steps)."""
    lr_warmup_steps: int | None = None
    """Linear warm-up from 0 to --lr over this many optimizer updates (project's choice: paper preset 1000)."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer update (accelerate's accumulation); effective batch = batch_size x this x processes."""
    log_sample_keys: str | None = None
    """Debug: folder where every process and DataLoader worker appends the keys it reads (keys-rank{r}-worker{w}.jsonl)."""
    use_joint_blocks: bool = True
    """Joint blocks' own layers (joint attention, FF, AdaLN); off = the paper's "w/o Joint Block" ablation."""
    joint_attention: Literal["perceiver", "vanilla"] = "perceiver"
    """Joint attention: perceiver (the paper) or vanilla self-attention (the "w/o Perceiver attn" ablation)."""
    cmc_pe: bool = False
    """Add CMC-PE (Hayakawa et al.'s cross-modal conditioning as positional encoding) in each Joint block."""
    timestep_gamma: float = 1.0
    """Timestep adjustment gamma (Hayakawa et al.; 1.0 = off, they use 1.5); the sampler reuses it."""
    independent_timesteps: bool = False
    """Draw the video and audio timesteps independently in training (Hayakawa et al.), for any gamma later."""

    def __post_init__(self):  # contradicting options are user errors (one `error:` line, exit 2)
        if self.cmc_pe and not self.use_joint_blocks:
            raise ValueError("cmc_pe=true needs use_joint_blocks=true (CMC-PE feeds the joint attention)")
        if not self.timestep_gamma > 0:
            raise ValueError(f"timestep_gamma must be > 0, got {self.timestep_gamma}")

    def resolved(self) -> "TrainConfig":
        d = PRESET_DEFAULTS[self.preset]
        return dataclasses.replace(self, **{k: v for k, v in d.items() if getattr(self, k) is None})


def parse_args(argv=None) -> tuple[TrainConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m train.jointdit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    from common.cli import add_config_arguments
    from common.config import field_docs, load

    p.add_argument("--dry-run", action="store_true", help="build the model (meta device for paper) and exit")
    p.add_argument("--print-params", action="store_true", help="print parameter counts beside the paper's table")
    docs = field_docs(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "joint":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = PRESET_DEFAULTS["tiny"].get(f.name, f.default) if f.default is None else f.default
        text = docs.get(f.name, f"setting `{f.name}`")
        text = f"{text} (default: {'per preset' if f.name in PRESET_DEFAULTS['tiny'] else default})"
        if f.type in ("bool",) or isinstance(f.default, bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text.replace("%", "%%"))
        else:
            typ = {"int": int, "float": float}.get(str(f.type).split(" |")[0], str)
            kw = dict(choices=list(PRESET_DEFAULTS)) if f.name == "preset" else {}
            if f.name == "mixed_precision":
                kw = dict(choices=["no", "fp16", "bf16"])
            if f.name == "lr_scheduler":
                kw = dict(choices=list(LR_SCHEDULERS))
            p.add_argument(flag, dest=f.name, type=typ, default=None, help=text.replace("%", "%%"), **kw)
    add_config_arguments(p, example="lr=1e-4 joint.heads=8")
    a = p.parse_args(argv)
    explicit = {f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig) if f.name != "joint"}
    cfg = load(TrainConfig, a.config, a.overrides, explicit=explicit)
    if cfg.preset not in PRESET_DEFAULTS:
        from common.config import ConfigError

        raise ConfigError(f"preset={cfg.preset!r}: expected one of {', '.join(PRESET_DEFAULTS)}")
    return cfg.resolved(), a


# ----------------------------------------------------------------------------------------- helpers


def spec_for(cfg: TrainConfig):
    from train.data import ClipSpec

    return ClipSpec(height=cfg.height, width=cfg.width)


def resolve_experts(cfg: TrainConfig) -> tuple[str, str]:
    from train.experts import write_tiny_experts

    if cfg.video_model and cfg.audio_model:
        return cfg.video_model, cfg.audio_model
    if cfg.preset != "tiny":
        raise SystemExit("--preset paper needs --video-model and --audio-model (hub ids or local diffusers folders)")
    v, a = write_tiny_experts(Path(cfg.out_dir) / "experts", seed=cfg.seed)
    return cfg.video_model or v, cfg.audio_model or a


def added_time_ids(b: int, fps: float, motion_bucket_id: int, noise_aug: float, device) -> torch.Tensor:
    return torch.tensor([[fps - 1, motion_bucket_id, noise_aug]], device=device, dtype=torch.float32).repeat(b, 1)


def encode_batch(frozen, batch: dict, cfg: TrainConfig, fps: float, generator=None) -> dict:
    """Clip tensors -> latents and condition (the work `train.cache_latents` does once)."""
    video = batch["video"]
    first = video[:, 0]
    return {
        "video_latents": frozen.encode_video(video, generator),
        "image_latents": frozen.encode_image(first, cfg.noise_aug, generator),
        "image_embeds": frozen.clip_embed(first),
        "audio_latents": frozen.encode_audio(batch["mel"], generator),
    }


def place_frozen(frozen, device, dtype=torch.float32):
    """The frozen encoders/decoders on `device` in `dtype`, except a VAE whose config says `force_upcast`
    (SVD's and AudioLDM2's: they overflow in fp16), which stays float32. FrozenParts casts every input to the
    module's own dtype and returns float32, so mixed dtypes need nothing else."""
    frozen.to(device)
    for name in ("video_vae", "audio_vae", "image_encoder", "vocoder"):
        m = getattr(frozen, name)
        upcast = name.endswith("_vae") and bool(getattr(m.config, "force_upcast", False))
        m.to(dtype=torch.float32 if upcast else dtype)
    return frozen


def diffusion_config(cfg: TrainConfig):
    """The training objective's settings (saved with every checkpoint; the sampler uses the saved ones)."""
    from train.diffusion import DiffusionConfig

    return DiffusionConfig(p_mean=cfg.p_mean, p_std=cfg.p_std, lambda_video=cfg.lambda_video, lambda_audio=cfg.lambda_audio,
                           timestep_gamma=cfg.timestep_gamma, independent_timesteps=cfg.independent_timesteps)


class EMA:
    """Exponential moving average of the trainable weights, kept in float32 beside the model."""

    def __init__(self, params: dict[str, torch.Tensor], decay: float):
        self.decay, self.num_updates = decay, 0
        self.shadow = {k: p.detach().float().clone() for k, p in params.items()}

    @torch.no_grad()
    def update(self, params: dict[str, torch.Tensor]) -> None:
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        keys = list(self.shadow)
        torch._foreach_lerp_([self.shadow[k] for k in keys], [params[k].detach().float() for k in keys], 1.0 - d)


# ------------------------------------------------------------------------------------- checkpoints

CHECKPOINT_RE = re.compile(r"checkpoint-(\d+)$")


def optimizer_to_safetensors(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer state dict as flat tensors + JSON (no pickle in checkpoints)."""
    tensors, other = {}, {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{name}"] = v.detach().cpu().contiguous()
            else:
                other[f"{pid}.{name}"] = v
    return tensors, {"param_groups": sd["param_groups"], "other": other}


def optimizer_from_safetensors(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict = {}
    for key, v in list(tensors.items()) + list(meta["other"].items()):
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state(generator: torch.Generator) -> dict:
    """Python, numpy, torch (CPU, CUDA) and the training generator's states, as JSON."""
    ver, mt, gauss = random.getstate()
    np_state = np.random.get_state()
    out = {"python": [ver, list(mt), gauss], "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
           "torch": torch.get_rng_state().tolist(), "generator": generator.get_state().tolist()}
    if torch.cuda.is_available():
        out["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(st: dict, generator: torch.Generator) -> None:
    random.setstate((st["python"][0], tuple(st["python"][1]), st["python"][2]))
    n = st["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    torch.set_rng_state(torch.tensor(st["torch"], dtype=torch.uint8))
    generator.set_state(torch.tensor(st["generator"], dtype=torch.uint8))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in st["cuda"]])


def save_checkpoint(path: Path, acc, model, optimizer, scheduler, ema: EMA | None, generator, state: dict) -> Path:
    """Write checkpoint folder `path` from every process (call on all of them): trainable weights, EMA
    (safetensors), JointDiT config, optimizer (safetensors + JSON), schedule and run state (state.json), each
    process's random states (rng-rank{r}.json). Written under a temporary name and renamed, so
    `latest_checkpoint` never picks up a half-written one."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    if acc.is_main_process:
        tmp.mkdir(parents=True, exist_ok=True)
    acc.wait_for_everyone()
    (tmp / f"rng-rank{acc.process_index}.json").write_text(json.dumps(rng_state(generator)))
    if acc.is_main_process:
        names = set(model.trainable_parameter_names())
        sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k in names}
        save_file(sd, str(tmp / "jointdit_trainable.safetensors"))
        if ema is not None:
            save_file({k: v.cpu().contiguous() for k, v in ema.shadow.items()}, str(tmp / "ema.safetensors"))
        model.save_config(tmp)
        tensors, meta = optimizer_to_safetensors(optimizer.state_dict())
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(meta))
        state = dict(state, scheduler=scheduler.state_dict(), ema_updates=ema.num_updates if ema else None)
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
    acc.wait_for_everyone()
    if acc.is_main_process:
        if path.exists():
            import shutil

            shutil.rmtree(path)
        tmp.rename(path)
    acc.wait_for_everyone()
    return path


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    cks = sorted(p for p in Path(out_dir).glob("checkpoint-*") if p.is_dir() and CHECKPOINT_RE.search(p.name))
    return cks[-1] if cks else None


def checkpoint_diffusion(state: dict):
    """The DiffusionConfig a checkpoint was trained with (older checkpoints: from their train_config)."""
    from train.diffusion import DiffusionConfig

    known = {f.name for f in dataclasses.fields(DiffusionConfig)}
    saved = state.get("diffusion_config")
    if saved is None:
        tc = state.get("train_config", {})
        saved = {k: tc[k] for k in ("p_mean", "p_std", "lambda_video", "lambda_audio") if k in tc}
    return DiffusionConfig(**{k: v for k, v in saved.items() if k in known})


def load_checkpoint(path: str | Path, dtype=torch.float32, ema: bool = True):
    """(JointDiT, FrozenParts, state) from a checkpoint folder written by `save_checkpoint`; with `ema` the
    EMA weights when the checkpoint has them (state['weights'] says which were loaded)."""
    from safetensors.torch import load_file

    from train.experts import load_experts
    from train.models.jointdit import JointDiT

    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    vunet, aunet, frozen = load_experts(state["video_model"], state["audio_model"])
    jcfg = JointDiT.load_config(path)
    model = JointDiT.from_experts(vunet, aunet, **JointDiT.options_from_config(jcfg))
    use_ema = ema and (path / "ema.safetensors").exists()
    sd = load_file(str(path / ("ema.safetensors" if use_ema else "jointdit_trainable.safetensors")))
    missing = set(sd) - set(model.state_dict())
    if missing:
        raise KeyError(f"checkpoint has unknown parameters: {sorted(missing)[:5]}")
    model.load_state_dict(sd, strict=False)
    state["weights"] = "ema" if use_ema else "trainable"
    return (model if dtype == torch.float32 else model.to(dtype)), frozen, state


# -------------------------------------------------------------------------------------------- main


def print_params(preset: str) -> dict:
    from train.experts import format_table, meta_parameter_table

    counts = meta_parameter_table(preset)
    print(f"JointDiT parameter counts ({preset} preset, meta device, no weights loaded)")
    print(format_table(counts))
    return counts


def check_inputs(cfg: TrainConfig, args) -> None:
    """User mistakes found before any model is built or anything is written (UsageError: exit 2)."""
    from common.cli import UsageError, output_dir, resolve_files

    if cfg.lr_scheduler not in LR_SCHEDULERS:
        raise UsageError(f"lr_scheduler={cfg.lr_scheduler!r}: expected one of {', '.join(LR_SCHEDULERS)}")
    if cfg.gradient_accumulation_steps < 1 or cfg.lr_warmup_steps < 0 or not 0.0 <= cfg.ema_decay < 1.0:
        raise UsageError("need gradient_accumulation_steps >= 1, lr_warmup_steps >= 0 and 0 <= ema_decay < 1")
    if args.dry_run or args.print_params:
        return
    if cfg.latents:
        resolve_files(cfg.latents, what="latent shards")
    elif cfg.shards:
        resolve_files(cfg.shards, what="shards")
    else:
        raise UsageError("give --shards PATTERN (curated WebDataset shards) or --latents PATTERN")
    from train.data import too_few_samples

    why = too_few_samples(cfg.latents or cfg.shards, int(os.environ.get("WORLD_SIZE", "1")), cfg.num_workers)
    if why:
        raise UsageError(why)
    output_dir(cfg.out_dir, what="--out-dir")
    if cfg.resume and cfg.resume != "latest" and not (Path(cfg.resume) / "state.json").is_file():
        raise UsageError(f"--resume {cfg.resume!r} is not a checkpoint folder (no state.json)")


def cli(argv=None) -> int:
    """`python -m train.jointdit`: user mistakes are one `error:` line and exit code 2."""
    from common.cli import run_main

    def body() -> int:
        r = main(argv)
        if isinstance(r, dict) and r.get("checkpoint") and r.get("main_process", True):
            print(f"saved to {r['checkpoint']}")
        return 0

    return run_main(body)


def main(argv=None) -> dict:
    cfg, args = parse_args(argv)
    from common.cli import settings_help, setup_logging

    setup_logging()
    if args.help_config:
        print(settings_help(TrainConfig))
        return {}
    check_inputs(cfg, args)
    if args.print_params or (args.dry_run and cfg.preset == "paper"):
        counts = print_params(cfg.preset)
        if args.dry_run:
            return {"params": counts}

    from accelerate import Accelerator
    from diffusers.optimization import get_scheduler
    from safetensors.torch import load_file
    from tqdm import tqdm

    from train.data import LatentClips, ShardClips, collate
    from train.diffusion import Condition, JointDiffusion
    from train.experts import build_jointdit, is_random, load_experts

    # torchrun without GPUs: accelerate only sets up its gloo process group when told to use the CPU
    cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    acc = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                      cpu=cpu)
    rank = acc.process_index
    random.seed(cfg.seed + rank)
    np.random.seed(cfg.seed + rank)
    torch.manual_seed(cfg.seed + rank)
    with acc.main_process_first():  # tiny stand-ins are written once, then read by every process
        experts = resolve_experts(cfg)
    random_weights = is_random(experts[0]) or is_random(experts[1])
    if random_weights and acc.is_main_process:
        log.warning("RANDOM-INIT expert weights (%s, %s): this run checks the pipeline, its outputs are noise", *experts)
    vunet, aunet, frozen = load_experts(*experts)
    options = dict(use_joint_blocks=cfg.use_joint_blocks, joint_attention=cfg.joint_attention, cmc_pe=cfg.cmc_pe)
    model = build_jointdit(vunet, aunet, frozen, cfg.preset, **{**options, **cfg.joint})
    model.set_trainable()
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    wdtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[cfg.mixed_precision]
    place_frozen(frozen, acc.device, wdtype if acc.device.type == "cuda" else torch.float32)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if acc.is_main_process:
        log.info("JointDiT: %d joint blocks, %.2fM trainable / %.2fM params; %d process(es) x %d DataLoader workers, "
                 "%d clips per update", model.num_joint_blocks, n_train / 1e6,
                 sum(p.numel() for p in model.parameters()) / 1e6, acc.num_processes, cfg.num_workers,
                 cfg.batch_size * cfg.gradient_accumulation_steps * acc.num_processes)
    if args.dry_run:
        return {"trainable": n_train}

    # model, optimizer, schedule (in optimizer updates), EMA
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, opt = acc.prepare(model, opt)
    raw = acc.unwrap_model(model)
    trainable = {n: p for n, p in raw.named_parameters() if p.requires_grad}
    sched = get_scheduler(cfg.lr_scheduler, opt, num_warmup_steps=cfg.lr_warmup_steps, num_training_steps=cfg.steps)
    ema = EMA(trainable, cfg.ema_decay) if cfg.ema else None
    gen = torch.Generator(device=acc.device).manual_seed(cfg.seed * 1000 + rank)

    # resume: weights, optimizer, schedule, EMA, data position (random states: below, after the loader)
    step, consumed, rng_saved = 0, 0, None
    ck = latest_checkpoint(cfg.out_dir) if cfg.resume == "latest" else Path(cfg.resume) if cfg.resume else None
    if cfg.resume == "latest" and ck is None:
        log.info("--resume latest: no checkpoint in %s, starting at step 0", cfg.out_dir)
    if ck is not None:
        st = json.loads((ck / "state.json").read_text())
        raw.load_state_dict(load_file(str(ck / "jointdit_trainable.safetensors")), strict=False)
        opt.load_state_dict(optimizer_from_safetensors(load_file(str(ck / "optimizer.safetensors")),
                                                       json.loads((ck / "optimizer.json").read_text())))
        sched.load_state_dict(st["scheduler"])
        if ema is not None:
            if (ck / "ema.safetensors").exists():
                ema.shadow = {k: v.to(acc.device) for k, v in load_file(str(ck / "ema.safetensors")).items()}
                ema.num_updates = st.get("ema_updates") or 0
            else:
                log.warning("%s has no EMA weights: the EMA starts from the resumed weights", ck)
        step, consumed = st["step"], st.get("batches_consumed", 0)
        layout = (acc.num_processes, cfg.num_workers, cfg.batch_size)
        if tuple(st.get("data_layout", layout)) != layout:
            log.warning("data layout (processes, workers, batch) %s differs from the checkpoint's %s: the data "
                        "position is approximate", layout, st.get("data_layout"))
        rng_file = ck / f"rng-rank{rank}.json"
        rng_saved = json.loads(rng_file.read_text()) if rng_file.exists() else None
        if acc.is_main_process:
            log.info("resumed from %s at step %d (%d batches consumed per process)", ck, step, consumed)

    spec = spec_for(cfg)
    data_kw = dict(shuffle=cfg.shuffle, repeat=True, seed=cfg.seed, rank=rank, world_size=acc.num_processes,
                   batch_size=cfg.batch_size, start_batches=consumed, log_dir=cfg.log_sample_keys)
    ds = LatentClips(cfg.latents, **data_kw) if cfg.latents else ShardClips(cfg.shards, spec, **data_kw)
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, collate_fn=collate, num_workers=cfg.num_workers)
    data = iter(loader)
    if rng_saved is not None:  # after the loader drew its worker seed, as the uninterrupted run did
        set_rng_state(rng_saved, gen)
    diffusion = JointDiffusion(diffusion_config(cfg))
    run_state = lambda: {"step": step, "batches_consumed": consumed, "video_model": experts[0],  # noqa: E731
                         "audio_model": experts[1], "preset": cfg.preset, "random_weights": random_weights,
                         "train_config": asdict(cfg), "diffusion_config": asdict(diffusion.cfg),
                         "data_layout": [acc.num_processes, cfg.num_workers, cfg.batch_size]}

    history: list[dict] = []
    pbar = tqdm(total=cfg.steps, initial=step, disable=not (cfg.progress and acc.is_main_process), desc="jointdit")
    t0, last = time.time(), step
    model.train()
    losses: list[dict] = []
    while step < cfg.steps:
        with acc.accumulate(model):
            batch = next(data)
            consumed += 1
            batch = {k: (v.to(acc.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
            lat = batch if cfg.latents else encode_batch(frozen, batch, cfg, spec.fps, gen)
            b = lat["video_latents"].shape[0]
            cond = Condition(lat["image_latents"], lat["image_embeds"],
                             added_time_ids(b, spec.fps, cfg.motion_bucket_id, cfg.noise_aug, acc.device)).drop(cfg.cond_drop, gen)
            with acc.autocast():
                out = diffusion.training_losses(model, lat["video_latents"], lat["audio_latents"], cond, generator=gen)
            acc.backward(out["loss"])
            if acc.sync_gradients and cfg.grad_clip:
                acc.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
        losses.append({k: out[k].item() for k in ("loss", "video", "audio")})
        if not acc.sync_gradients:
            continue
        lr = opt.param_groups[0]["lr"]  # the rate this update used
        sched.step()
        if ema is not None:
            ema.update(trainable)
        step += 1
        pbar.update(1)
        rec = {"step": step, **{k: sum(x[k] for x in losses) / len(losses) for k in losses[0]}, "lr": lr}
        losses = []
        history.append(rec)
        if step % cfg.log_every == 0 or step == cfg.steps:
            dt = time.time() - t0
            rec["steps_per_s"] = (step - last) / max(dt, 1e-9)
            t0, last = time.time(), step
            if acc.is_main_process:
                log.info("step %d loss %.4f (video %.4f audio %.4f) lr %.3g %.2f steps/s", step, rec["loss"],
                         rec["video"], rec["audio"], rec["lr"], rec["steps_per_s"])
        if step % cfg.save_every == 0 or step == cfg.steps:
            save_checkpoint(Path(cfg.out_dir) / f"checkpoint-{step:06d}", acc, raw, opt, sched, ema, gen, run_state())
    pbar.close()
    acc.wait_for_everyone()
    return {"history": history, "checkpoint": str(latest_checkpoint(cfg.out_dir)), "random_weights": random_weights,
            "model": raw, "frozen": frozen, "ema": ema, "main_process": acc.is_main_process}


if __name__ == "__main__":
    import sys

    sys.exit(cli())
