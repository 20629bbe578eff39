"""Command lines of `python -m sync_classifier.train` and `python -m sync_classifier.evaluate`.

Argument parsing only: settings are a TrainConfig / EvalConfig filled from the preset (or the resumed
run), `--config FILE`, the explicit flags and dotted `key=value` overrides (common.config), every value
checked by its type before anything is built. User mistakes end with one `error: ...` line and exit
code 2 (common.cli); the last line of a successful run says where the result was saved.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common.cli import UsageError, add_config_arguments, output_dir, output_file, resolve_files, run_main, settings_help, setup_logging
from common.config import load, to_dict

from .config import PRESETS, TrainConfig, model_config_error
from .evaluate import EvalConfig, print_result, run

# ------------------------------------------------------------------------------------------- train

TRAIN_FLAGS = {  # flag attribute -> dotted setting
    "steps": "steps", "batch_size": "batch_size", "lr": "lr", "max_minutes": "max_minutes", "seed": "seed",
    "num_workers": "num_workers", "threads": "threads", "device": "device", "eval_every": "eval_every",
}
from .train import RESUME_MAY_CHANGE as RESUME_OVERRIDABLE  # noqa: E402


def train_parser() -> argparse.ArgumentParser:
    from . import train

    p = argparse.ArgumentParser(prog="python -m sync_classifier.train", description=train.__doc__,
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
    from .train import train

    setup_logging()
    explicit = {dotted: getattr(args, flag) for flag, dotted in TRAIN_FLAGS.items()}
    if args.resume:
        run_dir = Path(args.resume)
        if args.shards or args.videos or args.init_avid or args.init_from or args.config:
            raise UsageError("--resume continues a run with its saved data and settings; drop --shards/--videos/--init-avid/--init-from/--config")
        from .train import read_run_state

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
            from .train import dry_run

            _check_train_config(cfg, args.init_avid)
            dry_run(cfg, source, path)
            return
        out = output_dir(args.out)
    _check_train_config(cfg, args.init_avid)
    train(cfg, out, source=source, path=path, init_avid=None if args.resume else args.init_avid,
          init_from=None if args.resume else args.init_from, resume=bool(args.resume), progress=not args.no_progress)
    print(f"saved checkpoint (config.json, model.safetensors, checkpoint-*/) and train_state.json, log.jsonl to {out}")


def _check_train_config(cfg: TrainConfig, init_avid: str | None) -> None:
    from .families import ALL_FAMILIES

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


# ------------------------------------------------------------------------------------------- evaluate

EVAL_FLAGS = {"checkpoint": "checkpoint", "videos": "videos", "shards": "shards", "synthetic": "synthetic",
              "protocol": "protocol", "families": "families", "seed": "seed", "synthetic_fps": "synthetic_fps",
              "threads": "threads", "json": "json", "real_media": "real_media", "device": "device"}


def evaluate_parser() -> argparse.ArgumentParser:
    from . import evaluate

    p = argparse.ArgumentParser(prog="python -m sync_classifier.evaluate", description=evaluate.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="checkpoint folder or a file inside it (this project's, or the authors' `modules`)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--videos", help="folder of sounding videos (searched recursively)")
    src.add_argument("--shards", help="curated WebDataset shards (glob / brace pattern, quoted)")
    src.add_argument("--synthetic", type=int, metavar="N", help="N fresh held-out synthetic videos per family")
    p.add_argument("--protocol", choices=("asva", "all"), help="asva (default): centre clip vs the 31 offsets; all: every clip")
    p.add_argument("--families", help="comma-separated synthetic look families (default: the six of the training mix)")
    p.add_argument("--real-media", help="folder of real media mixed into the synthetic videos")
    p.add_argument("--seed", type=int, help="first synthetic seed (default 1e9: held out from training)")
    p.add_argument("--synthetic-fps", type=float, help="frame rate of the synthetic videos (default 24)")
    p.add_argument("--threads", type=int, help="torch threads (0 = torch's default)")
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--json", help="also write the result as JSON to this file")
    add_config_arguments(p, example="protocol=all min_offsets=21")
    return p


def evaluate_main(argv=None) -> int:
    args = evaluate_parser().parse_args(argv)
    if args.help_config:
        print(settings_help(EvalConfig))
        return 0
    return run_main(lambda: _evaluate(args))


def _evaluate(args) -> None:
    explicit = {dotted: getattr(args, flag) for flag, dotted in EVAL_FLAGS.items()}
    cfg = load(EvalConfig, path=args.config, overrides=args.overrides, explicit=explicit)
    if not cfg.checkpoint:
        raise UsageError("--checkpoint is required")
    if cfg.json:
        output_file(cfg.json, "--json")
    res = run(cfg)
    print_result(res, cfg)
    if cfg.json:
        Path(cfg.json).write_text(json.dumps(res, indent=2) + "\n")
        print(f"saved result to {cfg.json}")
    else:
        print("result printed above (no --json given)", file=sys.stderr)


__all__ = ["train_main", "evaluate_main", "train_parser", "evaluate_parser"]
