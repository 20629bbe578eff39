"""Weight-free curation throughput against bare decoding of the same frames and audio, in one run.

    python bench/curate_throughput.py [--src sample/videos] [--repeat 3] [--runner local|ray]

Baseline: PyAV decode of every video frame converted to RGB at the same working size, plus the audio
resampled to 16 kHz mono: what any pipeline has to pay to look at the pixels and samples once.
Pipeline: `pipelines.curate` with the weight-free stages (decode, scenes, windows, pixel difference,
amplitude, merge, segment encoding, shards, manifests). Prints wall and CPU time of both and their ratio,
and the peak RSS growth per run as the number of videos grows (memory must not grow with it).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.config import load_config  # noqa: E402
from media.decode import DecodeConfig, _target_size, to_rgb  # noqa: E402
from curate.runner import run  # noqa: E402


def bare_decode(paths: list[Path], cfg: DecodeConfig) -> int:
    n = 0
    for p in paths:
        with av.open(str(p)) as c:
            vs = c.streams.video[0]
            vs.thread_type = "AUTO"
            streams = [vs] + list(c.streams.audio[:1])
            res = av.AudioResampler(format="flt", layout="mono", rate=cfg.audio_rate) if c.streams.audio else None
            size = None
            for packet in c.demux(streams):
                for fr in packet.decode():
                    if packet.stream.type == "video":
                        size = size or _target_size(fr.width, fr.height, cfg.short_side)
                        to_rgb(fr, *size)
                        n += 1
                    else:
                        res.resample(fr)
    return n


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "sample" / "videos"))
    ap.add_argument("--repeat", type=int, default=1, help="copies of the source set (memory-growth check)")
    ap.add_argument("--runner", default="local", choices=["local", "ray"])
    args = ap.parse_args(argv)
    src = sorted(p for p in Path(args.src).rglob("*.mp4"))
    cfg0 = DecodeConfig()
    tmp = Path(tempfile.mkdtemp(prefix="bench_curate_"))
    try:
        rows = []
        for copies in sorted({1, max(1, args.repeat)}):
            d = tmp / f"src{copies}"
            for k in range(copies):
                for p in src:
                    (d / f"c{k}").mkdir(parents=True, exist_ok=True)
                    shutil.copy(p, d / f"c{k}" / p.name)
            paths = sorted(d.rglob("*.mp4"))
            frames, bw, bc = timed(lambda: bare_decode(paths, cfg0))
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            base = [f"runner.kind={args.runner}", "balance.min_segments_per_class=0", "report=false"]
            cfg = load_config(None, base + ["score_only=true"], src=str(d), out=str(tmp / f"score{copies}"))
            _, sw, sc = timed(lambda: run(cfg, progress=False))
            cfg = load_config(None, base, src=str(d), out=str(tmp / f"out{copies}"))
            res, pw, pc = timed(lambda: run(cfg, progress=False))
            rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            rows.append((copies, len(paths), frames, bw, bc, sw, sc, pw, pc, res.stats, (rss1 - rss0) / 1024))
        print("score = decode, scenes, windows, filters, manifests (score_only); full = score + encode kept "
              "segments + shards")
        print(f"{'videos':>6} {'frames':>7} {'bare wall':>9} {'bare cpu':>8} {'score wall':>10} {'score cpu':>9} "
              f"{'full wall':>9} {'full cpu':>8} {'score/bare':>10} {'full/bare':>9} {'kept %':>6} {'peak RSS +MB':>12}")
        for copies, nv, frames, bw, bc, sw, sc, pw, pc, stats, drss in rows:
            kept = 100.0 * stats["segments"]["kept_seconds"] / max(stats["videos"]["source_seconds"], 1e-9)
            print(f"{nv:>6} {frames:>7} {bw:>9.2f} {bc:>8.2f} {sw:>10.2f} {sc:>9.2f} {pw:>9.2f} {pc:>8.2f} "
                  f"{sw / bw:>10.2f} {pw / bw:>9.2f} {kept:>6.1f} {drss:>12.0f}")
        print("ratios are wall time against bare decoding; CPU-time ratios: "
              + ", ".join(f"score {r[6] / r[4]:.2f} full {r[8] / r[4]:.2f}" for r in rows))
        stats = rows[-1][9]
        print("time by step (last run, summed over videos):",
              ", ".join(f"{k} {v['seconds']:.2f}s" for k, v in stats["timers"].items()))
        if args.runner == "ray":
            print("(ray: CPU time is the driver's only; compare wall times)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
