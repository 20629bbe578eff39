"""Cut the samplers' conditioning inputs (first frame, audio, sidecar fields) from test shards.

    python -m pipelines.conditions --reference 'out/shards/test-*.tar' --protocol jointdit --out cond/
    python -m train.sample_jointdit --checkpoint CKPT --condition cond/KEY-0.json --out gen/KEY-0-s0.mp4 --seed 0
    python -m train.sample_avsyncd --condition cond/KEY-0.json --out gen/KEY-0-s0.mp4 --seed 0
    python -m pipelines.evaluate --generated gen/ --reference 'out/shards/test-*.tar' --protocol jointdit

Per reference clip of the protocol: <key>-<i>.png (first frame), <key>-<i>.wav (the clip's audio) and
<key>-<i>.json (reference, clip_start, image, audio, label, protocol, samples per image). The samplers copy the
record's reference / clip_start / image / label into their output sidecar, so the paired metrics find the
ground truth. Use the same --seed as pipelines.evaluate to get the clips it would pick.
"""

from __future__ import annotations

import argparse
import sys

from common.cli import add_config_arguments, run_main, settings_help, setup_logging
from common.config import load


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.conditions", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", help="test shards (glob / brace pattern, quoted)")
    p.add_argument("--out", help="output folder (default out/conditions)")
    p.add_argument("--protocol", choices=["avsync15", "jointdit", "none"], help="which clips per segment (default jointdit)")
    p.add_argument("--dataset", choices=["avsync15", "greatesthits", "landscape"],
                   help="test set, for the protocol's samples-per-image count (default avsync15)")
    p.add_argument("--seed", type=int, help="seed of the random clip choice (default 0, as pipelines.evaluate)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(p, example="protocol=avsync15")
    return p


def main(argv: list[str] | None = None) -> int:
    from evaluation.conditions import ConditionConfig, write_conditions

    args = build_parser().parse_args(argv)
    if args.help_config:
        print(settings_help(ConditionConfig))
        return 0

    def body() -> int:
        cfg = load(ConditionConfig, args.config, args.overrides, explicit={
            "reference": args.reference, "out": args.out, "protocol": args.protocol, "dataset": args.dataset,
            "seed": args.seed})
        setup_logging()
        failed: list[dict] = []
        recs = write_conditions(cfg, progress=not args.no_progress, failed=failed)
        if not recs:
            print(f"no reference segments could be read from {cfg.reference!r}: no conditions written", file=sys.stderr)
            return 1
        from pathlib import Path

        from evaluation.conditions import FAILED_NAME

        note = f"; {len(failed)} failed to decode, listed in {Path(cfg.out) / FAILED_NAME}" if failed else ""
        print(f"saved to {cfg.out} ({len(recs)} conditions from {len({r['reference'] for r in recs})} segments{note})")
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
