"""Sync classifier accuracy on real footage dubbed with real one-shots at the footage's own events.

    python bench/sync_real_dubbed.py VIDEO [VIDEO ...] --checkpoint sync_classifier/checkpoints/small \
        [--dub motion|cuts] [--piece 6.0] [--stride 6.0] [--sounds sync_classifier/assets/drums] [--out out/sync_dubbed]

Real footage has no sound synchronized with its pictures that we are free to ship, so the sound is made
synchronous: `evaluation.dubbing` puts a real drum one-shot at every motion peak (or scene cut) of the
footage, over the original track at 10 %. The dubbed footage is cut into `--piece`-second videos, one every
`--stride` seconds (default: back to back; a shorter stride gives more, overlapping pieces and so more scored
centres from the same footage), written to --out, and `sync_classifier.evaluate --videos` scores them with
both protocols (chance printed with them).
None of this footage or its events was seen in training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from media.decode import DecodeConfig, decode_video  # noqa: E402
from media.encode import encode_mp4
from evaluation.dubbing import dub_events, load_one_shots  # noqa: E402
from sync_classifier.evaluate import main as evaluate_main  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="+", help="real footage (any video PyAV reads)")
    p.add_argument("--checkpoint", default="sync_classifier/checkpoints/small", help="sync classifier checkpoint")
    p.add_argument("--dub", choices=["motion", "cuts"], default="motion", help="events the one-shots are put on")
    p.add_argument("--piece", type=float, default=6.0, help="length of each evaluated video in seconds (>= 3.2)")
    p.add_argument("--stride", type=float, default=0.0, help="seconds between piece starts (default: --piece)")
    p.add_argument("--sounds", default="sync_classifier/assets/drums", help="folder of one-shot sounds (.ogg/.wav)")
    p.add_argument("--out", default="out/sync_dubbed", help="folder for the dubbed pieces and result.json")
    p.add_argument("--short-side", type=int, default=256, help="decode size (the classifier resizes anyway)")
    a = p.parse_args(argv)
    a.stride = a.stride or a.piece
    if a.stride <= 0 or a.piece < 3.2:
        p.error("--stride must be > 0 and --piece >= 3.2")
    out = Path(a.out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    n = 0
    for path in a.videos:
        v = decode_video(path, DecodeConfig(short_side=a.short_side, max_fps=1000.0, audio_rate=16000))
        sounds = load_one_shots(sorted(Path(a.sounds).glob("*.ogg")) + sorted(Path(a.sounds).glob("*.wav")), v.audio_rate)
        v, times = dub_events(v, sounds, a.dub)
        pieces = np.arange(0.0, v.duration - a.piece + 1e-9, a.stride)
        print(f"{Path(path).name}: {len(times)} {a.dub} events dubbed, {len(pieces)} pieces of {a.piece} s every {a.stride} s")
        for s0 in pieces:
            c = v.clip(s0, s0 + a.piece)
            name = out / "videos" / f"{Path(path).stem}_{a.dub}_{s0:07.2f}.mp4"
            name.write_bytes(encode_mp4(c.frames, c.fps, c.audio, c.audio_rate))
            n += 1
    print(f"{n} dubbed videos in {out / 'videos'}")
    return evaluate_main(["--checkpoint", a.checkpoint, "--videos", str(out / "videos"), "--json", str(out / "result.json"),
                          "--threads", "1"])


if __name__ == "__main__":
    sys.exit(main())
