"""Write the AVSync15-format dataset from a reviewed curation run (accepted segments only).

    python -m pipelines.split --out out/ --classes avsync15 --per-class 100 --test-per-class 10

Per class, `--per-class` accepted segments, `--test-per-class` of them in test; a source video's segments
are all on one side. Deterministic (hash of --seed, class, video id). Writes OUT/avsync15/ (or --dest):
train.txt / test.txt (`<class_dir>/<segment_id>.mp4` lines, as the authors' release), lists per class,
class_mapping.json, videos/, shards/{train,test}-NNNNNN.tar (copied, not re-encoded), manifest.parquet,
split.json and a dataset card README.md. Classes with too few accepted segments are an error unless
--allow-short.
"""

from __future__ import annotations

import argparse
import sys

from common.cli import add_config_arguments, run_main, settings_help, setup_logging
from common.config import load


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.split", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="folder of a reviewed curation run (segments.parquet, shards/, review.parquet)")
    p.add_argument("--dest", help="output folder (default: OUT/avsync15); an earlier split there is replaced")
    p.add_argument("--classes", help="avsync15 (default) / vggss (shipped lists), a file with one class per line, or a,b,c")
    p.add_argument("--per-class", type=int, help="items per class, train + test (default 100)")
    p.add_argument("--test-per-class", type=int, help="test items per class (default 10)")
    p.add_argument("--seed", type=int, help="seed of the hash that orders source videos (default 0)")
    p.add_argument("--allow-short", action="store_true",
                   help="keep classes with fewer accepted segments than --per-class (warn instead of failing)")
    p.add_argument("--no-videos", action="store_true", help="do not write videos/<class>/<segment>.mp4 (shards and lists only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(p, example="samples_per_shard=128")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from curate.split import SplitConfig, build_split

    if args.help_config:
        print(settings_help(SplitConfig))
        return 0

    setup_logging()

    def body() -> int:
        cfg = load(SplitConfig, args.config, args.overrides, explicit={
            "out": args.out, "dest": args.dest, "classes": args.classes, "per_class": args.per_class,
            "test_per_class": args.test_per_class, "seed": args.seed,
            "allow_short": True if args.allow_short else None, "videos": False if args.no_videos else None})
        result = build_split(cfg, progress=not args.no_progress)
        print(result.summary())
        print(f"dataset saved in {result.dest}/ (train.txt, test.txt, shards/, README.md)")
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
