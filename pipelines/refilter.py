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
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.refilter", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder of a finished `pipelines.curate` run")
    p.add_argument("--config", help="YAML/JSON with new thresholds (stage params), balance, shards")
    p.add_argument("--min-segments-per-class", type=int)
    p.add_argument("--no-recut", action="store_true", help="fail instead of re-cutting segments that were not staged")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p


SCORING_KEYS = ("decode", "scenes", "windows", "cascade", "src", "csv", "classes")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import yaml

    from curate.config import _from_dict, _set_dotted, load_config, CurateConfig
    from curate.finalize import finalize
    from curate.runner import build_stages

    saved = Path(args.out) / "work" / "config.json"
    if not saved.is_file():
        print(f"error: {saved} not found: is --out a finished curation run?", file=sys.stderr)
        return 2
    base = json.loads(saved.read_text())
    new = load_config(args.config, args.overrides,
                      **{"balance.min_segments_per_class": args.min_segments_per_class})
    merged = dict(base)
    newd = new.to_dict()
    default = CurateConfig().to_dict()
    # take from the new config only what it sets differently from the defaults, and never scoring settings
    for key in ("stage_params", "balance", "shards", "stages", "report"):
        if newd[key] != default[key]:
            merged[key] = newd[key] if key != "stage_params" else {
                k: {**base["stage_params"].get(k, {}), **v} for k, v in {**base["stage_params"], **newd[key]}.items()}
    for key in SCORING_KEYS:
        if newd[key] != default[key] and newd[key] != base[key]:
            print(f"error: `{key}` changes how windows are scored; refilter cannot change it (run curate again)", file=sys.stderr)
            return 2
    missing = [s for s in merged["stages"] if s not in base["stages"]]
    if missing:
        print(f"error: stage(s) {missing} were not run in {args.out}; their scores do not exist", file=sys.stderr)
        return 2
    merged["out"] = args.out
    merged["score_only"] = newd["score_only"]  # refilter writes shards unless told score_only=true
    cfg = _from_dict(CurateConfig, merged)
    stages = build_stages(cfg, check=False)
    t0 = time.perf_counter()
    result = finalize(cfg, stages, run_seconds=0.0, source_media_fallback=not args.no_recut)
    from curate.report import write_report

    write_report(Path(cfg.out))
    (Path(args.out) / "work" / "refilter.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True, default=str))
    print(result.summary())
    print(f"refiltered in {time.perf_counter() - t0:.1f} s; outputs in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
