"""Regenerate the synthetic part of the embedded sample set (deterministic): python sample/make_sample.py

- strikes00N: the sync classifier's synthetic sounding videos (objects that strike, bounce, flash or change
  shape exactly when a real drum hit or a synthesized hit sounds): synchronized by construction.
- cutshots000: two shots joined by a hard cut; stillimage0: a still picture with clicks; silentball0: a
  bouncing disc without sound. Each should fail a different filter.
"""

import argparse
from pathlib import Path

HERE = Path(__file__).parent / "videos"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python sample/make_sample.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(HERE), help=f"folder to write the synthetic videos to (default: {HERE})")
    args = p.parse_args(argv)
    write_synthetic(Path(args.out))
    print(f"synthetic sample videos written to {args.out}")
    return 0


def write_synthetic(out: Path) -> None:
    from curate import synthetic as syn
    from sync_classifier.synthetic import make_sounding_video

    out.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        video, _ = make_sounding_video(seed=1000 + i, duration=8.0, size=160, fps=24.0)
        syn.write_video(out / f"strikes{i:03d}0_000000.mp4", video)
    syn.write_video(out / "cutshots000_000000.mp4", syn.cut_video(9.0, cut_at=4.5, size=(144, 256), fps=15.0, seed=7))
    syn.write_video(out / "stillimage0_000000.mp4", syn.static_video(5.0, size=(144, 256), fps=15.0, seed=8))
    syn.write_video(out / "silentball0_000000.mp4", syn.bouncing_video(5.0, size=(144, 256), fps=15.0, seed=9, silent=True)[0])


if __name__ == "__main__":
    raise SystemExit(main())
