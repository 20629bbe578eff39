"""Cost of the weight-free metrics (motion score, AV-Align, AV-Align pr, AV-Align*) against a bare decode of the
same clips, in one run.

    python bench/evaluate_throughput.py [--clips 16] [--size 256] [--fps 7] [--seconds 2]

Writes --clips synthetic sounding mp4s shaped like generated samples (default: JointDiT's 2 s, 7 fps, 256 x 256,
16 kHz audio) to a temporary folder, then times (a) decoding each clip and (b) decoding + every weight-free
metric, and prints clips/s of both and the ratio. The first librosa call (numba compilation) is warmed up first.
`--fad` also times the FAD feature networks on the decoded audio (VGGish, and Melception as the `jointdit`
protocol uses it; random weights: the timing is what it measures, not the features).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from media.decode import DecodeConfig, decode_video  # noqa: E402
from media.encode import encode_mp4
from evaluation.av_align import av_align_scores  # noqa: E402
from evaluation.motion import flow_magnitudes, motion_score  # noqa: E402


def synth(seed: int, seconds: float, fps: float, size: int, rate: int = 16000):
    rng = np.random.default_rng(seed)
    n = int(seconds * fps)
    frames = np.empty((n, size, size, 3), np.uint8)
    frames[:] = rng.integers(0, 80, 3)
    audio = (rng.standard_normal(int(seconds * rate)) * 0.01).astype(np.float32)
    x = size // 4
    for i in range(n):
        if rng.random() < 0.3:
            x = int(rng.integers(0, size - size // 4))
            a = int(i / fps * rate)
            audio[a : a + 400] += rng.standard_normal(min(400, audio.size - a)).astype(np.float32) * 0.5
        frames[i, size // 3 : size // 3 + size // 4, x : x + size // 4] = 220
    return frames, audio


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--fps", type=float, default=7.0)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--fad", action="store_true", help="also time the FAD networks (VGGish, Melception; random weights)")
    a = p.parse_args(argv)
    cfg = DecodeConfig(short_side=0, max_fps=1000.0, audio_rate=16000)
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i in range(a.clips):
            f, au = synth(i, a.seconds, a.fps, a.size)
            path = Path(d) / f"clip{i:03d}.mp4"
            path.write_bytes(encode_mp4(f, a.fps, au, 16000))
            paths.append(path)
        v = decode_video(paths[0], cfg)
        av_align_scores(v.audio, v.audio_rate, flow_magnitudes(v.frames), v.fps)  # warm-up (numba)
        t0 = time.perf_counter()
        for path in paths:
            decode_video(path, cfg)
        t_decode = time.perf_counter() - t0
        t0 = time.perf_counter()
        for path in paths:
            v = decode_video(path, cfg)
            mags = flow_magnitudes(v.frames)
            motion_score(mags)
            av_align_scores(v.audio, v.audio_rate, mags, v.fps)
        t_all = time.perf_counter() - t0
        audios = [decode_video(path, cfg).audio for path in paths] if a.fad else []
    fad = {}
    for name in ("vggish", "melception") if a.fad else ():
        import torch

        from evaluation.extractors import EXTRACTORS

        ext = EXTRACTORS[name](preset="real", batch_size=16)
        torch.manual_seed(0)
        ext._build_random()
        ext.net.eval()
        ext(audios[:1]) if name == "vggish" else ext(audios[:1], 16000)  # warm-up
        t0 = time.perf_counter()
        ext(audios) if name == "vggish" else ext(audios, 16000)
        fad[name] = time.perf_counter() - t0
    print(f"{a.clips} clips of {a.seconds} s, {a.fps} fps, {a.size}x{a.size}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}")
    print(f"decode only:                 {a.clips / t_decode:8.1f} clips/s ({t_decode:.2f} s)")
    print(f"decode + weight-free metrics: {a.clips / t_all:8.1f} clips/s ({t_all:.2f} s)")
    print(f"ratio (metrics+decode / decode): {t_all / t_decode:.1f}x")
    for name, t in fad.items():
        print(f"FAD features, {name:10s} (random weights): {a.clips / t:8.1f} clips/s ({t:.2f} s), {t / t_decode:.1f}x the decode")


if __name__ == "__main__":
    main()
