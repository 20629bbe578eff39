"""Train the sync classifier: 21-offset symmetric InfoNCE (supplement Sec. 1.2), the authors' recipe.

    python -m sync_classifier.train                               # small preset, synthetic look families
    python -m sync_classifier.train --preset small --out out/sync_small real_media=DIR
    python -m sync_classifier.train --shards 'out/shards/*.tar' --preset paper --init-avid avid.pth
    accelerate launch -m sync_classifier.train --preset paper --videos DIR --init-avid avid.pth
    python -m sync_classifier.train --resume out/sync_small       # continue the same run

Recipe: stage 1 (the first `stage1_steps`) uses easy negatives only (other instances), stage 2 hard
negatives only (the instance's shifted clips); an AVID-CMA init replaces stage 1. LR warm-up, gradient
norm clipping, fp16/bf16 autocast on GPU, several GPUs through `accelerate launch` (each rank reads
its own share of the data). The run folder holds config.json + model.safetensors (the model, loadable
with SyncClassifier.from_pretrained / SyncScorer.from_pretrained), train_state.pt (optimizer, step,
elapsed time, training config, data position) and log.jsonl (loss, accuracies, stage, lr, steps/s).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .config import TrainConfig
from .data import InstanceStream, clip_offsets
from .frames import clip_tensor
from .loss import easy_infonce, sync_infonce
from .model import SyncClassifier, load_avid

log = logging.getLogger("sync_classifier.train")


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


def train(cfg: TrainConfig, out: Path, source: str = "synthetic", path=None, init_avid: str | None = None,
          resume: bool = False, progress: bool = True, init_from: str | None = None) -> Path:
    """Run (or resume) a training into the run folder `out`; returns `out`. Inputs are assumed checked
    (see sync_classifier.cli)."""
    accelerator = None
    if launched_by_accelerate():
        from accelerate import Accelerator

        accelerator = Accelerator(mixed_precision=cfg.mixed_precision if cfg.device != "cpu" else "no", cpu=cfg.device == "cpu")
    is_main = accelerator is None or accelerator.is_main_process
    device = accelerator.device if accelerator is not None else torch.device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)

    model = SyncClassifier(cfg.model, training_data="synthetic" if source == "synthetic" else "unknown")
    state = torch.load(out / "train_state.pt", map_location="cpu", weights_only=False) if resume else None
    step, elapsed, consumed = 0, 0.0, 0
    if state is not None:
        loaded = SyncClassifier.from_pretrained(out)
        model.load_state_dict(loaded.state_dict())
        model.training_data = loaded.training_data
        step, elapsed, consumed = state["step"], state["elapsed"], state.get("consumed", 0)
        log.info("resumed %s at step %d (%.1f min trained)", out, step, elapsed / 60)
    elif init_from:
        from common.cli import UsageError

        start = SyncClassifier.from_pretrained(init_from)
        have, want = start.state_dict(), model.state_dict()
        misfit = sorted(set(have) ^ set(want)) or [k for k in want if have[k].shape != want[k].shape]
        if misfit:
            raise UsageError(f"--init-from {init_from!r}: its weights do not fit this run's model (first misfit: "
                             f"{misfit[0]}; use the same preset and the model.* settings that shape the weights)")
        theirs, ours = start.config.to_dict(), model.config.to_dict()
        changed = {k: (theirs[k], ours[k]) for k in ours if theirs[k] != ours[k]}
        model.load_state_dict(have)
        log.info("initialised from %s (training data %s)%s", init_from, start.training_data,
                 "; model settings changed: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()) if changed else "")
    elif init_avid:
        rep = load_avid(model, init_avid)
        log.info("AVID init: loaded %d tensors, %d encoder tensors missing, %d mismatched, %d unexpected",
                 len(rep["loaded"]), len(rep["missing"]), len(rep["mismatched"]), len(rep["unexpected"]))
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
    scores = PairScores(model)
    scaler = None
    if accelerator is not None:
        scores, opt = accelerator.prepare(scores, opt)
    elif cfg.mixed_precision == "fp16" and device.type == "cuda":
        scaler = torch.amp.GradScaler("cuda")
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("preset %s, %.2fM parameters, source %s %s, %d process(es), out %s", cfg.preset, n_params / 1e6, source,
             path if isinstance(path, str) or path is None else f"{len(path)} shard(s)", world, out)

    offsets = clip_offsets(cfg.num_offsets, cfg.offset_step)
    workers = max(1, cfg.num_workers)
    stream = InstanceStream(cfg.model.spec, offsets, source=source, path=path, seed=cfg.seed,
                            start=step * cfg.batch_size * world, synthetic_fps=cfg.synthetic_fps,
                            families=cfg.families, real_media=cfg.real_media, rank=rank, world_size=world,
                            shuffle_buffer=cfg.shuffle_buffer,
                            skip=consumed // (workers * world) if source == "videos" else 0)
    loader = torch.utils.data.DataLoader(stream, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                                         persistent_workers=cfg.num_workers > 0, pin_memory=device.type == "cuda",
                                         prefetch_factor=2 if cfg.num_workers > 0 else None)
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + step + 104729 * rank)

    def save():
        if not is_main:
            return
        model.save_pretrained(out)
        torch.save({"config": cfg.to_dict(), "optimizer": opt.state_dict(), "step": step, "elapsed": elapsed,
                    "consumed": consumed, "source": source, "source_path": path}, out / "train_state.tmp")
        (out / "train_state.tmp").replace(out / "train_state.pt")

    bar = None
    if progress and is_main:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc="train", dynamic_ncols=True)
    logf = open(out / "log.jsonl", "a") if is_main else None
    limit = cfg.max_minutes * 60 if cfg.max_minutes else math.inf
    model.train()
    window, t_last, saved_at, t_data = [], time.perf_counter(), step, 0.0
    data_iter = iter(loader)
    while step < cfg.steps and elapsed < limit:
        t0 = time.perf_counter()
        batch = next(data_iter)
        t1 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        stage = 1 if step < cfg.stage1_steps else 2
        m = train_step(scores, batch, opt, cfg, gen, easy_negatives=stage == 1, scaler=scaler, accelerator=accelerator)
        step += 1
        consumed += cfg.batch_size * world
        dt = time.perf_counter() - t0
        t_data += t1 - t0
        elapsed += dt
        window.append(m)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{m['loss']:.3f}", a2v=f"{m['acc_a2v']:.2f}", v2a=f"{m['acc_v2a']:.2f}", stage=stage)
        if is_main and (step % cfg.log_every == 0 or step == cfg.steps):
            now = time.perf_counter()
            rec = {"step": step, "stage": stage, "lr": lr_at(cfg, step - 1), "elapsed_min": round(elapsed / 60, 3),
                   "steps_per_s": round(len(window) / (now - t_last), 4), "data_wait_s": round(t_data / len(window), 4)}
            for key in ("loss", "acc_a2v", "acc_v2a"):
                rec[key] = round(float(np.mean([w[key] for w in window])), 4)
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
            if bar is None:
                log.info("%s", rec)
            window, t_last, t_data = [], now, 0.0
        if is_main and cfg.eval_every and step % cfg.eval_every == 0:
            from .evaluate import evaluate_model, synthetic_videos

            fam = cfg.families[0] if cfg.families else "motion"
            res = evaluate_model(model, synthetic_videos(cfg.eval_videos, spec=cfg.model.spec, family=fam))
            model.train()
            logf.write(json.dumps({"step": step, "eval": res}) + "\n")
            logf.flush()
            log.info("step %d eval (%s, centre clip, 31 offsets, +-0.2 s): a2v %.3f v2a %.3f", step, fam, res["acc_a2v"], res["acc_v2a"])
        if step - saved_at >= cfg.save_every:
            save()
            saved_at = step
    save()
    if bar is not None:
        bar.close()
    if logf is not None:
        logf.close()
    log.info("done: step %d, %.1f min of training", step, elapsed / 60)
    return out


def main(argv=None) -> int:
    """`python -m sync_classifier.train`; returns the exit code (0, or 2 with one `error:` line)."""
    from .cli import train_main

    return train_main(argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
