"""Re-apply thresholds to a finished curation run from its stored scores, and rebuild its outputs.

    python -m pipelines.refilter --out out/ [--config new.yaml] [pixel_diff.max=0.12 ...]

No video is decoded for scoring and no model runs: every window's every score is in the run's results.
Segments that the earlier run staged are copied; a segment that grows under looser thresholds is cut
again from its source video (only that video's frames are decoded). The original settings are read from
`<out>/work/config.json`; the config file and overrides change thresholds, class balance and sharding.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from common.cli import UsageError, add_config_arguments, run_main, settings_help, setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.refilter", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="output folder of a finished `pipelines.curate` run (required)")
    p.add_argument("--min-segments-per-class", type=int, help="class balance threshold (0 disables)")
    p.add_argument("--no-recut", action="store_true", help="fail instead of re-cutting segments that were not staged")
    add_config_arguments(p, example="pixel_diff.max=0.12")
    return p


SCORING_KEYS = ("decode", "scenes", "windows", "cascade", "src", "csv", "classes")


def main(argv: list[str] | None = None) -> int:
    return run_main(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    from curate.config import CurateConfig, load_config
    from media import storage
    from curate.finalize import finalize
    from curate.runner import build_stages, empty_reason

    if args.help_config:
        print(settings_help(CurateConfig))
        return 0
    if not args.out:
        build_parser().error("the following arguments are required: --out")
    saved = storage.join(args.out, "work", "config.json")
    if not storage.is_file(saved):
        raise UsageError(f"{saved} not found: is --out a finished curation run?")
    base = json.loads(storage.read_text(saved))
    base["score_only"] = False  # refilter writes shards unless told score_only=true
    cfg = load_config(args.config, args.overrides, base=base, out=args.out,
                      **{"balance.min_segments_per_class": args.min_segments_per_class})
    new = cfg.to_dict()
    for key in SCORING_KEYS:
        if new[key] != base[key]:
            raise UsageError(f"`{key}` changes how windows are scored; refilter cannot change it (run curate again)")
    missing = [s for s in cfg.stages if s not in base["stages"]]
    if missing:
        raise UsageError(f"stage(s) {missing} were not run in {args.out}; their scores do not exist")
    stages = build_stages(cfg, check=False)
    t0 = time.perf_counter()
    result = finalize(cfg, stages, run_seconds=0.0, source_media_fallback=not args.no_recut, report=True)
    storage.write_bytes(storage.join(args.out, "work", "refilter.json"),
                        json.dumps(new, indent=2, sort_keys=True, default=str).encode())
    print(result.summary())
    print(f"refiltered in {time.perf_counter() - t0:.1f} s; outputs in {args.out}/")
    empty = empty_reason(result.stats)
    if empty:
        print(f"error: the run produced no data: {empty}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
