"""Does AV-Align rank real footage above the same footage with its audio shifted? (docs/evaluation.md table)

    python bench/av_align_shift.py [video.mp4 ...] [--clip 2.0] [--fps 0] [--short-side 256] [--dub motion|cuts]

Each video is cut into consecutive clips of --clip seconds; each clip is scored with its own audio and with the
audio taken 0.5 s and 1.0 s later (the frames stay); the mean over clips of AV-Align, AV-Align (pr) and AV-Align*
is printed per shift. A sync metric should rank shift 0 first (highest AV-Align, lowest AV-Align*).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from media.decode import DecodeConfig, decode_video  # noqa: E402
from evaluation.av_align import AVAlignConfig, av_align_scores  # noqa: E402
from evaluation.dubbing import dub_events, load_one_shots  # noqa: E402
from evaluation.motion import flow_magnitudes  # noqa: E402

SHIFTS = (0.0, 0.5, 1.0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="+", help="sounding videos to score (e.g. the Big Buck Bunny trailer of sample/videos)")
    p.add_argument("--clip", type=float, default=2.0, help="clip length in seconds")
    p.add_argument("--fps", type=float, default=0.0, help="frame rate of the flow (0 = the source rate)")
    p.add_argument("--short-side", type=int, default=256)
    p.add_argument("--flow-peak-min", type=float, default=None, help="smallest video peak in px (default: the version's)")
    p.add_argument("--version", choices=["current", "2023"], default="current", help="AV-Align rules (authors' code version)")
    p.add_argument("--dub", choices=["none", "motion", "cuts"], default="none",
                   help="replace the sound by real one-shots at the footage's own motion peaks or cuts (evaluation.dubbing)")
    p.add_argument("--sounds", default="sync_classifier/assets/drums", help="folder of one-shot sounds for --dub")
    a = p.parse_args(argv)
    cfg = AVAlignConfig(version=a.version, flow_peak_min=a.flow_peak_min)
    t0 = time.time()
    scores = {s: [] for s in SHIFTS}
    n_clips = 0
    for path in a.videos:
        v = decode_video(path, DecodeConfig(short_side=a.short_side, max_fps=a.fps or 1000.0, audio_rate=16000))
        if a.dub != "none":
            sounds = load_one_shots(sorted(Path(a.sounds).glob("*.ogg")) + sorted(Path(a.sounds).glob("*.wav")), v.audio_rate)
            v, times = dub_events(v, sounds, a.dub)
            print(f"{Path(path).name}: {len(times)} {a.dub} events dubbed")
        starts = np.arange(0.0, v.duration - a.clip - max(SHIFTS) + 1e-9, a.clip)
        for s0 in starts:
            c = v.clip(s0, s0 + a.clip)
            mags = flow_magnitudes(c.frames)
            n_clips += 1
            for sh in SHIFTS:
                audio = v.audio_slice(s0 + sh, s0 + sh + c.num_frames / v.fps)
                scores[sh].append(av_align_scores(audio, v.audio_rate, mags, v.fps, cfg))
    print(f"AV-Align version {cfg.version} (smallest video peak {cfg.peak_min} px)")
    print(f"{n_clips} clips of {a.clip} s from {', '.join(Path(x).name for x in a.videos)} ({time.time() - t0:.1f} s)")
    print("| audio shift | AV-Align (higher better) | AV-Align pr (higher better) | AV-Align* (lower better) |")
    print("|---|---|---|---|")
    for sh in SHIFTS:
        rows = scores[sh]
        m = {k: np.nanmean([r[k] for r in rows]) for k in ("av_align", "av_align_pr", "av_align_star")}
        print(f"| {sh:.1f} s | {m['av_align']:.3f} | {m['av_align_pr']:.3f} | {m['av_align_star']:.3f} |")
    return scores


if __name__ == "__main__":
    main()
