"""The sync classifier's trainer (entry point `python -m sync_classifier.train`): 21-offset symmetric InfoNCE
(supplement Sec. 1.2), the authors' recipe, on the shared training engine.

    python -m sync_classifier.train                               # small preset, synthetic look families
    python -m sync_classifier.train --preset small --out out/sync_small real_media=DIR
    python -m sync_classifier.train --shards 'out/shards/*.tar' --preset paper --init-avid avid.pth
    accelerate launch -m sync_classifier.train --preset paper --videos DIR --init-avid avid.pth
    python -m sync_classifier.train --resume out/sync_small       # continue the same run

Recipe: stage 1 (the first `stage1_steps`) uses easy negatives only (other instances), stage 2 hard
negatives only (the instance's shifted clips); an AVID-CMA init replaces stage 1. LR warm-up, gradient
norm clipping, fp16/bf16 autocast on GPU, several GPUs through `accelerate launch` (each rank reads
its own share of the data). The loop is the project's training engine (train.engine): the run folder
holds checkpoint-NNNNNN/ folders (safetensors weights and optimizer, JSON state; the newest `keep_last`
kept; also written on SIGTERM / SIGUSR1), config.json + model.safetensors of the newest one (loadable with
SyncClassifier.from_pretrained / SyncScorer.from_pretrained), train_state.json (settings, data source,
step) and log.jsonl (loss, accuracies, stage, lr, grad norm, steps/s; eval records).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
from pathlib import Path

import torch
import torch.nn as nn

from common.cli import UsageError, add_config_arguments, output_dir, resolve_files, run_main, settings_help, setup_logging
from common.config import load, to_dict

from sync_classifier.config import PRESETS, TrainConfig, model_config_error
from sync_classifier.data import InstanceStream, clip_offsets
from sync_classifier.frames import clip_tensor
from sync_classifier.loss import easy_infonce, sync_infonce
from sync_classifier.model import SyncClassifier, load_avid

log = logging.getLogger("sync_classifier.train")  # the entry point's name, as users know it


class PairScores(nn.Module):
    """The training forward pass as one module (so DDP / accelerate see a single forward): B*K audio and
    B*K video clips -> phi for the K x K pairs of each instance ([B, K, K], stage 2) or for all B*K x B*K
    pairs of the batch ([B*K, B*K], stage 1)."""

    def __init__(self, model: SyncClassifier):
        super().__init__()
        self.model = model

    def forward(self, mel: torch.Tensor, video: torch.Tensor, b: int, k: int, all_pairs: bool) -> torch.Tensor:
        a = self.model.encode_audio(mel)
        v = self.model.encode_video(video)
        if all_pairs:
            return self.model.head.pairwise(a[None], v[None])[0]
        return self.model.head.pairwise(a.reshape(b, k, -1), v.reshape(b, k, -1))


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up over cfg.warmup_steps, then constant (the authors' constant_with_warmup) or a
    half-cosine decay reaching 0 at cfg.steps (lr_schedule="cosine")."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        span = max(1, cfg.steps - cfg.warmup_steps)
        done = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * done))
    return cfg.lr


def train_step(model: SyncClassifier | PairScores, batch: dict, opt: torch.optim.Optimizer, cfg: TrainConfig,
               gen: torch.Generator | None = None, easy_negatives: bool = False, scaler=None, accelerator=None) -> dict:
    """One optimisation step on a batch {'mel': [B, K, 1, F, T], 'frames': uint8 [B, K, T, S, S, 3]}.

    Each clip is encoded once; phi for the pairs comes from the head's split first layer
    (SyncHead.pairwise). easy_negatives: stage-1 loss (loss.easy_infonce), else stage 2 (sync_infonce).
    """
    scores = model if isinstance(model, PairScores) or accelerator is not None else PairScores(model)
    core = scores.model if hasattr(scores, "model") else accelerator.unwrap_model(scores).model
    mel, frames = batch["mel"], batch["frames"]
    b, k = mel.shape[:2]
    dev = next(core.parameters()).device
    flip = torch.rand(b * k, generator=gen) < 0.5 if cfg.flip else None
    video = clip_tensor(frames.reshape(b * k, *frames.shape[2:]), core.spec, flip=flip).to(dev, non_blocking=True)
    mel = mel.reshape(b * k, *mel.shape[2:]).to(dev, non_blocking=True)
    amp = contextlib.nullcontext()
    if accelerator is None and cfg.mixed_precision != "no" and dev.type == "cuda":
        amp = torch.autocast("cuda", dtype=torch.float16 if cfg.mixed_precision == "fp16" else torch.bfloat16)
    with amp:
        phi = scores(mel, video, b, k, easy_negatives)
    loss, metrics = easy_infonce(phi, b, k, cfg.temperature) if easy_negatives else sync_infonce(phi, cfg.temperature)
    opt.zero_grad(set_to_none=True)
    params = [p for p in core.parameters() if p.requires_grad]
    if accelerator is not None:
        accelerator.backward(loss)
        if cfg.grad_clip:
            metrics["grad_norm"] = float(accelerator.clip_grad_norm_(params, cfg.grad_clip))
        opt.step()
    elif scaler is not None:
        scaler.scale(loss).backward()
        if cfg.grad_clip:
            scaler.unscale_(opt)
            metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        if cfg.grad_clip:
            metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        opt.step()
    metrics["loss"] = loss.item()
    return metrics


def launched_by_accelerate() -> bool:
    """True under `accelerate launch` (or torchrun with several processes)."""
    return any(k.startswith("ACCELERATE_") for k in os.environ) or int(os.environ.get("WORLD_SIZE", "1")) > 1


STATE_NAME = "train_state.json"


def read_run_state(out: Path) -> dict:
    """The run folder's training state (settings, data source, step); a run of the old pickle format is refused
    with one line (its model.safetensors still loads: use it with --init-from)."""
    from common.cli import UsageError

    if (out / STATE_NAME).is_file():
        return json.loads((out / STATE_NAME).read_text())
    if (out / "train_state.pt").is_file():
        raise UsageError(f"{out} was written by an older trainer (train_state.pt, a pickle this version does not read); "
                         f"start a new run from its weights with --init-from {out}")
    raise UsageError(f"--resume {str(out)!r}: no {STATE_NAME} in that folder")


def engine_settings(cfg: TrainConfig, out: Path):
    from train.engine import EngineSettings

    precision = cfg.mixed_precision or None
    if cfg.device == "cpu":
        precision = "no"
    return EngineSettings(
        out_dir=str(out), steps=cfg.steps, lr=cfg.lr, weight_decay=cfg.weight_decay,
        lr_lambda=lambda n: lr_at(cfg, n) / cfg.lr, grad_clip=cfg.grad_clip, mixed_precision=precision, ema=False,
        save_every=cfg.save_every, keep_last=cfg.keep_last, log_every=cfg.log_every, validate_every=cfg.eval_every,
        trackers=tuple(t.strip() for t in cfg.trackers.split(",")), seed=cfg.seed,
        time_limit_s=cfg.max_minutes * 60 if cfg.max_minutes else math.inf, cpu=cfg.device == "cpu",
        generator_device="cpu", name="sync_classifier")


def train(cfg: TrainConfig, out: Path, source: str = "synthetic", path=None, init_avid: str | None = None,
          resume: bool = False, progress: bool = True, init_from: str | None = None) -> Path:
    """Run (or resume) a training into the run folder `out`; returns `out`. Inputs are assumed checked
    (see the command line below)."""
    from common.cli import UsageError
    from train.checkpointing import latest_checkpoint
    from train.engine import Engine, ResumeMismatch, weight_mismatch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    run_config = {**cfg.to_dict(), "source": source, "source_path": path}
    eng = Engine(dataclasses.replace(engine_settings(cfg, out), progress=progress), run_config,
                 may_change=RESUME_MAY_CHANGE | {"source_path"})
    model = SyncClassifier(cfg.model, training_data="synthetic" if source == "synthetic" else "unknown")
    if init_from and not resume:
        start = SyncClassifier.from_pretrained(init_from)
        have, want = start.state_dict(), model.state_dict()
        misfit = weight_mismatch(have, want)
        if misfit:
            raise UsageError(f"--init-from {init_from!r}: its weights do not fit this run's model ({'; '.join(misfit)}; "
                             "use the same preset and the model.* settings that shape the weights)")
        theirs, ours = start.config.to_dict(), model.config.to_dict()
        changed = {k: (theirs[k], ours[k]) for k in ours if theirs[k] != ours[k]}
        model.load_state_dict(have)
        log.info("initialised from %s (training data %s)%s", init_from, start.training_data,
                 "; model settings changed: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()) if changed else "")
    elif init_avid and not resume:
        rep = load_avid(model, init_avid)
        log.info("AVID init: loaded %d tensors, %d encoder tensors missing, %d mismatched, %d unexpected",
                 len(rep["loaded"]), len(rep["missing"]), len(rep["mismatched"]), len(rep["unexpected"]))

    def save_extra(folder: Path) -> None:  # main process: the checkpoint and the run folder stay loadable models
        eng.raw.model.save_pretrained(folder)
        eng.raw.model.save_pretrained(out)
        (out / STATE_NAME).write_text(json.dumps({"config": cfg.to_dict(), "step": eng.step, "elapsed": eng.elapsed,
                                                  "consumed": eng.consumed * cfg.batch_size * eng.world,
                                                  "source": source, "source_path": path, "checkpoint": folder.name}, indent=1))

    eng.setup(PairScores(model), weights=lambda raw: raw.model.state_dict(), weights_file="model.safetensors",
              save_extra=save_extra)
    if resume:
        ck = latest_checkpoint(out)
        if ck is None:
            raise UsageError(f"--resume {str(out)!r}: no checkpoint-* folder in it")
        try:
            eng.resume(ck)
        except ResumeMismatch as e:
            raise UsageError(str(e)) from None
        model.training_data = json.loads((ck / "config.json").read_text()).get("training_data", model.training_data)
        log.info("resumed %s at step %d (%.1f min trained)", out, eng.step, eng.elapsed / 60)
    rank, world = eng.rank, eng.world
    log.info("preset %s, %.2fM parameters, source %s %s, %d process(es), precision %s, out %s", cfg.preset,
             sum(p.numel() for p in model.parameters()) / 1e6, source,
             path if isinstance(path, str) or path is None else f"{len(path)} shard(s)", world, eng.precision, out)

    offsets = clip_offsets(cfg.num_offsets, cfg.offset_step)
    workers = max(1, cfg.num_workers)
    seen = eng.consumed * cfg.batch_size * world
    stream = InstanceStream(cfg.model.spec, offsets, source=source, path=path, seed=cfg.seed, start=seen,
                            synthetic_fps=cfg.synthetic_fps, families=cfg.families, real_media=cfg.real_media,
                            rank=rank, world_size=world, shuffle_buffer=cfg.shuffle_buffer,
                            skip=seen // (workers * world) if source == "videos" else 0)
    loader = torch.utils.data.DataLoader(stream, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                                         persistent_workers=cfg.num_workers > 0, pin_memory=eng.device.type == "cuda",
                                         prefetch_factor=2 if cfg.num_workers > 0 else None)

    def loss_fn(batch: dict, step: int) -> dict:
        stage = 1 if step < cfg.stage1_steps else 2
        mel, frames = batch["mel"], batch["frames"]
        b, k = mel.shape[:2]
        flip = torch.rand(b * k, generator=eng.gen) < 0.5 if cfg.flip else None
        video = clip_tensor(frames.reshape(b * k, *frames.shape[2:]), cfg.model.spec, flip=flip).to(eng.device, non_blocking=True)
        mel = mel.reshape(b * k, *mel.shape[2:]).to(eng.device, non_blocking=True)
        with eng.autocast():
            phi = eng.model(mel, video, b, k, stage == 1)
        loss, m = easy_infonce(phi, b, k, cfg.temperature) if stage == 1 else sync_infonce(phi, cfg.temperature)
        return {"loss": loss, "acc_a2v": m["acc_a2v"], "acc_v2a": m["acc_v2a"], "stage": stage}

    def validate(step: int) -> dict:
        from sync_classifier.evaluate import evaluate_model, synthetic_videos

        fam = cfg.families[0] if cfg.families else "motion"
        res = evaluate_model(model, synthetic_videos(cfg.eval_videos, spec=cfg.model.spec, family=fam))
        log.info("step %d eval (%s, centre clip, 31 offsets, +-0.2 s): a2v %.3f v2a %.3f", step, fam, res["acc_a2v"], res["acc_v2a"])
        return {"metrics": {k: v for k, v in res.items() if isinstance(v, (int, float))}}

    r = eng.fit(iter(loader), loss_fn, validate if cfg.eval_every else None)
    if eng.is_main and not (out / STATE_NAME).is_file():  # steps=0: still a loadable run folder
        save_extra(out)
    log.info("done: step %d, %.1f min of training%s", r["step"], eng.elapsed / 60,
             f" (stopped: {r['interrupted']})" if r["interrupted"] else "")
    return out


def dry_run(cfg: TrainConfig, source: str, path) -> dict:
    """Resolved settings, data plan and a per-GPU memory estimate (meta-device forward of one step)."""
    from media.stream import data_plan
    from train.memory import estimate, format_estimate, measured_activations, planned_precision

    world = int(os.environ.get("WORLD_SIZE", "1"))
    precision = planned_precision(cfg.mixed_precision)
    k = len(clip_offsets(cfg.num_offsets, cfg.offset_step))
    print("settings:", json.dumps(cfg.to_dict(), default=str))
    print(f"processes {world}, precision {precision}, {cfg.batch_size} instance(s) x {k} clips per process and step")
    if source == "shards":  # read as the trainer reads them (InstanceStream's ShardStream, data mode auto)
        print("data plan:", json.dumps(data_plan(path, world, max(1, cfg.num_workers), "auto")))
    else:
        print(f"data: {source} {path or ''}")
    with torch.device("meta"):
        scores = PairScores(SyncClassifier(cfg.model))
    scores.to("meta").train()
    s, n = cfg.model.spec, cfg.batch_size * k
    act = measured_activations(lambda: scores(torch.zeros(n, 1, s.n_mels, s.mel_frames),
                                              torch.zeros(n, 3, s.num_frames, s.image_size, s.image_size),
                                              cfg.batch_size, k, False).sum())
    est = estimate(scores, precision, False, act)
    print(f"memory per GPU ({cfg.preset}, {n} clips, {precision}):")
    print(format_estimate(est))
    return {"memory": est}


# settings that may differ when a run is resumed (the rest must be the checkpoint's)
RESUME_MAY_CHANGE = {"steps", "max_minutes", "num_workers", "threads", "device", "eval_every", "log_every", "save_every",
                     "eval_videos", "shuffle_buffer", "keep_last", "trackers"}


# ------------------------------------------------------------------------------------------- command line

TRAIN_FLAGS = {  # flag attribute -> dotted setting
    "steps": "steps", "batch_size": "batch_size", "lr": "lr", "max_minutes": "max_minutes", "seed": "seed",
    "num_workers": "num_workers", "threads": "threads", "device": "device", "eval_every": "eval_every",
}
RESUME_OVERRIDABLE = RESUME_MAY_CHANGE


def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sync_classifier.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--shards", help="train on curated WebDataset shards (glob / brace pattern, quoted)")
    src.add_argument("--videos", help="train on a folder of sounding videos (each >= 6 s; streamed, shuffled per pass)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="small", help="model/training size the settings start from (default small)")
    p.add_argument("--out", default="out/sync_classifier", help="run folder (checkpoint-*/, the newest model, train_state.json, log.jsonl)")
    p.add_argument("--resume", metavar="RUN", help="run folder to continue (its saved settings are used; steps/max_minutes/... may be changed)")
    p.add_argument("--init-avid", metavar="FILE", help="AVID-CMA checkpoint: initialise the encoders where keys and shapes match (replaces stage 1)")
    p.add_argument("--init-from", metavar="CKPT", help="start from the weights of a checkpoint of this project whose weights fit this "
                   "run's model (same keys and shapes; settings that change no shape, e.g. model.video_cells, may differ; "
                   "fresh optimizer and step count; e.g. a curriculum: first the flash family, then the mix)")
    p.add_argument("--steps", type=int, help="total training steps (setting `steps`)")
    p.add_argument("--batch-size", type=int, help="instances per step per process (setting `batch_size`)")
    p.add_argument("--lr", type=float, help="learning rate after warm-up (setting `lr`)")
    p.add_argument("--max-minutes", type=float, help="stop after this much training time in total over resumes; 0 = no limit")
    p.add_argument("--seed", type=int, help="random seed (data order, init, flips)")
    p.add_argument("--num-workers", type=int, help="DataLoader worker processes (0 = load in the training process)")
    p.add_argument("--threads", type=int, help="torch threads of the training process (0 = torch's default)")
    p.add_argument("--eval-every", type=int, help="evaluate on held-out synthetic videos every N steps (0 = never)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (under accelerate launch each process takes its GPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    p.add_argument("--dry-run", action="store_true", help="print the settings, data plan and a per-GPU memory estimate, and exit")
    add_config_arguments(p, example="stage1_steps=2000 model.embed_dim=256")
    return p


def train_main(argv=None) -> int:
    args = train_parser().parse_args(argv)
    if args.help_config:
        print(settings_help(TrainConfig))
        return 0
    return run_main(lambda: _train(args))


def _train(args) -> None:

    setup_logging()
    explicit = {dotted: getattr(args, flag) for flag, dotted in TRAIN_FLAGS.items()}
    if args.resume:
        run_dir = Path(args.resume)
        if args.shards or args.videos or args.init_avid or args.init_from or args.config:
            raise UsageError("--resume continues a run with its saved data and settings; drop --shards/--videos/--init-avid/--init-from/--config")

        state = read_run_state(run_dir)
        cfg = load(TrainConfig, overrides=args.overrides, base=TrainConfig.from_dict(state["config"]), explicit=explicit)
        changed = {k for k, v in to_dict(cfg).items() if v != to_dict(TrainConfig.from_dict(state["config"])).get(k)}
        if changed - RESUME_OVERRIDABLE:
            raise UsageError(f"cannot change {', '.join(sorted(changed - RESUME_OVERRIDABLE))} when resuming "
                             f"(only {', '.join(sorted(RESUME_OVERRIDABLE))})")
        source, path = state["source"], state["source_path"]
        out = output_dir(run_dir, "--resume")
    else:
        # resolve the data first: a pattern matching nothing fails before anything is built
        path = resolve_files(args.shards, "shards") if args.shards else args.videos
        source = "shards" if args.shards else "videos" if args.videos else "synthetic"
        if args.videos and not Path(args.videos).is_dir():
            raise UsageError(f"--videos {args.videos!r} is not a folder")
        if args.init_avid and not Path(args.init_avid).is_file():
            raise UsageError(f"--init-avid {args.init_avid!r} is not a file")
        if args.init_avid and args.init_from:
            raise UsageError("give --init-avid or --init-from, not both")
        if args.init_from and not Path(args.init_from).exists():
            raise UsageError(f"--init-from {args.init_from!r} does not exist")
        cfg = load(TrainConfig, path=args.config, overrides=args.overrides, base=PRESETS[args.preset](), explicit=explicit)
        if args.dry_run:

            _check_train_config(cfg, args.init_avid)
            dry_run(cfg, source, path)
            return
        out = output_dir(args.out)
    _check_train_config(cfg, args.init_avid)
    train(cfg, out, source=source, path=path, init_avid=None if args.resume else args.init_avid,
          init_from=None if args.resume else args.init_from, resume=bool(args.resume), progress=not args.no_progress)
    print(f"saved checkpoint (config.json, model.safetensors, checkpoint-*/) and train_state.json, log.jsonl to {out}")


def _check_train_config(cfg: TrainConfig, init_avid: str | None) -> None:
    from sync_classifier.families import ALL_FAMILIES

    if init_avid and cfg.stage1_steps:
        raise UsageError("--init-avid replaces stage 1: set stage1_steps=0 (the paper never uses both)")
    if cfg.stage1_steps and cfg.batch_size < 2:
        raise UsageError("stage1_steps > 0 needs batch_size >= 2 (easy negatives come from other instances)")
    if cfg.mixed_precision not in ("", "no", "fp16", "bf16"):
        raise UsageError(f"mixed_precision={cfg.mixed_precision!r}: expected no, fp16 or bf16")
    bad = [f for f in cfg.families if f not in ALL_FAMILIES]
    if bad or not cfg.families:
        raise UsageError(f"unknown family {bad[0]!r}; known: {', '.join(ALL_FAMILIES)}" if bad else "families is empty")
    if cfg.real_media and not Path(cfg.real_media).is_dir():
        raise UsageError(f"real_media={cfg.real_media!r} is not a folder")
    if cfg.lr_schedule not in ("constant", "cosine"):
        raise UsageError(f"lr_schedule={cfg.lr_schedule!r}: expected constant or cosine")
    error = model_config_error(cfg.model)
    if error:
        raise UsageError(error)
    if cfg.model.spec.resize not in ("bilinear", "bicubic"):
        raise UsageError(f"model.spec.resize={cfg.model.spec.resize!r}: expected bilinear or bicubic")


def main(argv=None) -> int:
    """`python -m sync_classifier.train`; returns the exit code (0, or 2 with one `error:` line)."""
    return train_main(argv)


if __name__ == "__main__":
    sys.exit(main())
