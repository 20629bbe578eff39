"""Train the sync classifier: 21-offset symmetric InfoNCE (supplement Sec. 1.2).

    python -m sync_classifier.train                               # small preset, synthetic videos
    python -m sync_classifier.train --preset small --out out/sync_small --max-minutes 30
    python -m sync_classifier.train --shards 'out/shards/*.tar' --preset paper --init-avid avid.pth
    python -m sync_classifier.train --resume out/sync_small       # continue the same run

The run folder holds config.json + model.safetensors (the model, loadable with
SyncClassifier.from_pretrained / SyncScorer.from_pretrained), train_state.pt (optimizer, step,
elapsed time, training config) and log.jsonl (loss, accuracies, steps/s).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from .config import PRESETS, TrainConfig, load_config_file, merge
from .data import InstanceStream, clip_offsets
from .frames import video_to_tensor
from .loss import sync_infonce
from .model import SyncClassifier, load_avid

log = logging.getLogger("sync_classifier.train")


def train_step(model: SyncClassifier, batch: dict, opt: torch.optim.Optimizer, cfg: TrainConfig,
               gen: torch.Generator | None = None, easy_negatives: bool = False) -> dict:
    """One optimisation step on a batch {'mel': [B, K, 1, F, T], 'frames': uint8 [B, K, T, S, S, 3]}.

    Each of the B*K audio and B*K video clips is encoded once; phi for all K x K pairs of an instance
    comes from the head's split first layer (SyncHead.pairwise). With easy_negatives (stage-1 warm-up)
    the candidates are all B*K clips of the batch instead of the K of the instance.
    """
    mel, frames = batch["mel"], batch["frames"]
    b, k = mel.shape[:2]
    dev = next(model.parameters()).device
    flip = torch.rand(b * k, generator=gen) < 0.5 if cfg.flip else None
    video = video_to_tensor(frames.reshape(b * k, *frames.shape[2:]), model.spec.image_size, flip=flip).to(dev)
    a = model.encode_audio(mel.reshape(b * k, *mel.shape[2:]).to(dev)).reshape(b, k, -1)
    v = model.encode_video(video).reshape(b, k, -1)
    if easy_negatives:
        loss, metrics = sync_infonce(model.head.pairwise(a.reshape(1, b * k, -1), v.reshape(1, b * k, -1)), cfg.temperature)
    else:
        loss, metrics = sync_infonce(model.head.pairwise(a, v), cfg.temperature)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    metrics["loss"] = loss.item()
    return metrics


def build_config(args) -> TrainConfig:
    cfg = PRESETS[args.preset]()
    if args.config:
        cfg = merge(cfg, load_config_file(args.config))
    over = {k: getattr(args, k) for k in ("steps", "batch_size", "lr", "max_minutes", "seed", "num_workers", "threads", "device", "eval_every")
            if getattr(args, k) is not None}
    return merge(cfg, over)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m sync_classifier.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--shards", help="train on curated WebDataset shards (glob / brace pattern)")
    src.add_argument("--videos", help="train on a folder of sounding videos (each >= 6 s)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="small", help="model/training size (default small)")
    p.add_argument("--config", help="yaml/json file with TrainConfig fields (nested 'model'/'spec'); CLI flags override it")
    p.add_argument("--out", default="out/sync_classifier", help="run folder (checkpoints, logs)")
    p.add_argument("--resume", help="run folder to continue (its saved config is used; --steps/--max-minutes may extend it)")
    p.add_argument("--init-avid", help="AVID-CMA checkpoint: initialise the audio/video encoders where keys and shapes match")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--max-minutes", type=float, help="stop after this much training time (total over resumes); 0 = no limit")
    p.add_argument("--seed", type=int)
    p.add_argument("--num-workers", type=int)
    p.add_argument("--threads", type=int, help="torch threads of the training process")
    p.add_argument("--eval-every", type=int, help="evaluate (31 offsets) on held-out synthetic videos every N steps")
    p.add_argument("--device")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    return p.parse_args(argv)


def main(argv=None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(args.resume or args.out)
    state = None
    if args.resume:
        state = torch.load(out / "train_state.pt", map_location="cpu", weights_only=False)
        cfg = TrainConfig.from_dict(state["config"])
        over = {k: getattr(args, k) for k in ("steps", "max_minutes", "num_workers", "threads", "device", "eval_every") if getattr(args, k) is not None}
        cfg = merge(cfg, over)
        source, path = state["source"], state["source_path"]
    else:
        cfg = build_config(args)
        source = "shards" if args.shards else "videos" if args.videos else "synthetic"
        path = args.shards or args.videos
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)

    model = SyncClassifier(cfg.model).to(cfg.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, elapsed = 0, 0.0
    if state is not None:
        loaded = SyncClassifier.from_pretrained(out, device=cfg.device)
        model.load_state_dict(loaded.state_dict())
        opt.load_state_dict(state["optimizer"])
        step, elapsed = state["step"], state["elapsed"]
        log.info("resumed %s at step %d (%.1f min trained)", out, step, elapsed / 60)
    elif args.init_avid:
        rep = load_avid(model, args.init_avid)
        log.info("AVID init: loaded %d tensors, %d encoder tensors missing, %d mismatched, %d unexpected",
                 len(rep["loaded"]), len(rep["missing"]), len(rep["mismatched"]), len(rep["unexpected"]))
    n_params = sum(p.numel() for p in model.parameters())
    log.info("preset %s, %.2fM parameters, source %s %s, out %s", cfg.preset, n_params / 1e6, source, path or "", out)

    offsets = clip_offsets(cfg.num_offsets, cfg.offset_step)
    stream = InstanceStream(cfg.model.spec, offsets, source=source, path=path, seed=cfg.seed,
                            start=step * cfg.batch_size, synthetic_fps=cfg.synthetic_fps,
                            families=cfg.families, real_media=cfg.real_media)
    loader = torch.utils.data.DataLoader(stream, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                                         persistent_workers=cfg.num_workers > 0,
                                         prefetch_factor=2 if cfg.num_workers > 0 else None)
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + step)

    def save():
        model.save_pretrained(out)
        torch.save({"config": cfg.to_dict(), "optimizer": opt.state_dict(), "step": step, "elapsed": elapsed,
                    "source": source, "source_path": path}, out / "train_state.tmp")
        (out / "train_state.tmp").replace(out / "train_state.pt")

    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc="train", dynamic_ncols=True)
    logf = open(out / "log.jsonl", "a")
    limit = cfg.max_minutes * 60 if cfg.max_minutes else math.inf
    model.train()
    window, t_last, saved_at = [], time.perf_counter(), step
    data_iter = iter(loader)
    while step < cfg.steps and elapsed < limit:
        t0 = time.perf_counter()
        batch = next(data_iter)
        m = train_step(model, batch, opt, cfg, gen, easy_negatives=step < cfg.warmup_easy_steps)
        step += 1
        dt = time.perf_counter() - t0
        elapsed += dt
        window.append(m)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{m['loss']:.3f}", a2v=f"{m['acc_a2v']:.2f}", v2a=f"{m['acc_v2a']:.2f}")
        if step % cfg.log_every == 0 or step == cfg.steps:
            now = time.perf_counter()
            rec = {"step": step, "elapsed_min": round(elapsed / 60, 3), "steps_per_s": round(len(window) / (now - t_last), 4)}
            for key in ("loss", "acc_a2v", "acc_v2a"):
                rec[key] = round(float(np.mean([w[key] for w in window])), 4)
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
            if bar is None:
                log.info("%s", rec)
            window, t_last = [], now
        if cfg.eval_every and step % cfg.eval_every == 0:
            from .evaluate import evaluate_model, synthetic_videos

            model.eval()
            res = evaluate_model(model, synthetic_videos(cfg.eval_videos, spec=cfg.model.spec))
            model.train()
            logf.write(json.dumps({"step": step, "eval": res}) + "\n")
            logf.flush()
            log.info("step %d eval (31 offsets, +-0.2 s): a2v %.3f v2a %.3f", step, res["acc_a2v"], res["acc_v2a"])
        if step - saved_at >= cfg.save_every:
            save()
            saved_at = step
    save()
    if bar is not None:
        bar.close()
    logf.close()
    log.info("done: step %d, %.1f min of training, saved to %s", step, elapsed / 60, out)
    return out


if __name__ == "__main__":
    main()
