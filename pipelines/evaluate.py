"""Evaluate generated sounding videos against reference (test) shards with the papers' metrics.

    python -m pipelines.evaluate --generated gen/ --reference 'out/shards/test-*.tar' --metrics all \
        --protocol avsync15 --out eval/ [--config eval.yaml] [key=value ...]

Writes metrics.json (every metric, the networks and weights used, counts, protocol), per_sample.parquet
(every per-clip score) and report.html. Networks whose weights are missing stop the run at start, naming what
to provide; --allow-random-weights runs them random-init and flags every affected number.
"""

from __future__ import annotations

import argparse
import sys

from common.cli import add_config_arguments, run_main, settings_help, setup_logging, UsageError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generated", help="folder of generated <name>.mp4 files (+ <name>.json sidecars)")
    p.add_argument("--reference", help="reference shard pattern(s), e.g. 'out/shards/test-*.tar'")
    p.add_argument("--metrics", help="comma-separated metrics or 'all': fvd,kvd,fid,fad,kl,ib,ia,it,relsync,alignsync,"
                   "av_align,av_align_pr,av_align_star,motion")
    p.add_argument("--protocol", choices=["avsync15", "jointdit", "none"], help="test protocol (default: none)")
    p.add_argument("--dataset", choices=["avsync15", "greatesthits", "landscape"],
                   help="test set: GreatestHits clip size / 10 s segments, jointdit sample counts (default: avsync15)")
    p.add_argument("--out", help="output folder (default: eval)")
    p.add_argument("--device", help="torch device for the networks (default: cpu)")
    p.add_argument("--allow-random-weights", action="store_true",
                   help="run networks with missing weights random-init (smoke tests); every affected number is flagged")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(p, example="i3d.weights=/models/i3d_torchscript.pt")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body():
        from common.config import load
        from evaluation.runner import EvalConfig, EvaluationError, run, summary_lines

        if args.help_config:
            print(settings_help(EvalConfig))
            return 0
        setup_logging()
        cfg = load(EvalConfig, args.config, args.overrides, explicit={
            "generated": args.generated, "reference": args.reference, "metrics": args.metrics, "protocol": args.protocol, "dataset": args.dataset,
            "out": args.out, "device": args.device, "allow_random_weights": True if args.allow_random_weights else None})
        if not cfg.generated:
            raise UsageError("--generated is required (a folder of generated .mp4 files)")
        try:
            result = run(cfg, progress=not args.no_progress)
        except EvaluationError as e:
            raise UsageError(str(e)) from None
        print("\n".join(summary_lines(result)))
        print(f"outputs saved in {result.out}/ (metrics.json, per_sample.parquet, report.html)")
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
