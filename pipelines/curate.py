"""Curate a folder of raw sounding videos into WebDataset shards (AVSync15 pipeline).

    python -m pipelines.curate --src vggsound/ --out out/ [--config curate.yaml] [key=value ...]
"""

from __future__ import annotations

import argparse
import sys

from common.cli import UsageError, add_config_arguments, output_dir, run_main, settings_help, setup_logging
from common.hub import prepare_hub
from curate.config import PAPER_STAGES, CurateConfig, load_config
from media.storage import is_uri

MODEL_STAGES = ("clip_diff", "imagebind", "psync")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.curate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Overrides: any config value as dotted key=value, e.g. pixel_diff.min=0.02 decode.short_side=224 "
        "shards.samples_per_shard=512 runner.kind=local. Outputs: windows.parquet, segments.parquet, inputs.parquet, "
        "shards/{split}-NNNNNN.tar, stats.json, report.html (see README).",
    )
    p.add_argument("--src", help="folder of videos (searched recursively) or one video file; a local path or an "
                   "object-storage URI (s3://bucket/videos/, gs://...)")
    p.add_argument("--out", help="output folder (default: out), a local path or an object-storage URI; rerunning "
                   "with the same --out resumes (and retries inputs that failed for a transient reason)")
    p.add_argument("--retry-failed", action="store_true", help="resume: also retry every input that failed before")
    p.add_argument("--csv", help="VGGSound-format CSV: youtube_id,start_seconds,label,split")
    p.add_argument("--classes", help="class allow-list (preliminary curation): a file with one class per line, or "
                   "`vggss` (the 149 VGGSS classes) / `avsync15` (the 15 AVSync15 classes), shipped")
    p.add_argument("--stages", help=f"comma-separated filter stages in order (default: pixel_diff,amplitude; paper: {','.join(PAPER_STAGES)})")
    p.add_argument("--limit", type=int, help="process only the first N inputs (sorted by path)")
    p.add_argument("--address", help="join an existing Ray cluster (e.g. auto or ray://host:10001); default: embedded local Ray")
    p.add_argument("--num-cpus", type=int, help="CPUs of the embedded Ray cluster (default: all)")
    p.add_argument("--local", action="store_true", help="run in-process without Ray (debugging, tiny sets)")
    p.add_argument("--cascade", action="store_true", help="later stages score only windows earlier stages kept (faster)")
    p.add_argument("--allow-random-weights", action="store_true",
                   help="run model stages with random-init weights when real ones are missing (smoke tests; scores flagged as not meaningful)")
    p.add_argument("--min-segments-per-class", type=int, help="class balance threshold (default 100; 0 disables)")
    p.add_argument("--dry-run", action="store_true", help="list what would be processed and the plan of stages, then exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(p, example="pixel_diff.min=0.02")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_main(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    if args.help_config:
        print(settings_help(CurateConfig))
        return 0
    explicit = {
        "src": args.src,
        "out": args.out,
        "csv": args.csv,
        "classes": args.classes,
        "stages": args.stages,
        "limit": args.limit,
        "runner.address": args.address,
        "runner.num_cpus": args.num_cpus,
        "runner.kind": "local" if args.local else None,
        "cascade": True if args.cascade else None,
        "allow_random_weights": True if args.allow_random_weights else None,
        "balance.min_segments_per_class": args.min_segments_per_class,
        "retry_failed": True if args.retry_failed else None,
    }
    cfg = load_config(args.config, args.overrides, **explicit)
    if not is_uri(cfg.out):
        output_dir(cfg.out)
    from curate.runner import build_stages, empty_reason, plan_run, run
    from curate.stage import StageUnavailable

    plan = None
    try:
        if any(s in MODEL_STAGES for s in cfg.stages):
            prepare_hub()  # offline: fail at once instead of retrying each download
        stages = build_stages(cfg)
        plan = plan_run(cfg, stages)  # every input mistake is reported here, before any work
        if args.dry_run:
            print(plan.describe())
            return 0
        result = run(cfg, progress=not args.no_progress)
    except StageUnavailable as e:
        raise UsageError(str(e)) from None
    print(result.summary())
    print(f"outputs in {result.out}/ (windows.parquet, segments.parquet, inputs.parquet, shards/, stats.json, report.html)")
    empty = empty_reason(result.stats)
    if empty:
        print(f"error: the run produced no data: {empty}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
