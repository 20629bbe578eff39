"""Data loading throughput of the sync classifier's training stream against its training step.

    python bench/sync_data_throughput.py [--preset small] [--instances 12] [--folder-videos 4] [--real-media DIR]

Measures, in one process with 1 torch thread, instances per second of `InstanceStream` (each instance
= 21 audio clips -> log-mel and 21 video clips of 12 frames, resized) for
  1. synthetic look families (generated on the fly; with real backgrounds/sounds if --real-media),
  2. a folder of mp4 files (decoded one at a time, streamed and shuffled, as `--videos` training does),
and the time of one training step on a batch of the preset's size. The loader keeps up when
instances/s >= batch_size / step time; with `num_workers` worker processes it has that many times
the single-process rate (given free cores).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sync_classifier.config import PRESETS
from sync_classifier.data import InstanceStream, clip_offsets
from sync_classifier.model import SyncClassifier
from sync_classifier.synthetic import write_synthetic_folder
from train.sync_classifier import PairScores, train_step


def rate(stream, n: int) -> tuple[float, list]:
    it = iter(stream)
    first = next(it)  # one-off set-up (drum samples, real media) not counted
    t0 = time.perf_counter()
    items = [next(it) for _ in range(n)]
    return n / (time.perf_counter() - t0), [first] + items


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", choices=sorted(PRESETS), help="model / clip sizes (default small)")
    p.add_argument("--instances", type=int, default=12, help="instances timed per source")
    p.add_argument("--folder-videos", type=int, default=4, help="mp4 files written for the folder source")
    p.add_argument("--real-media", default="", help="real media folder for the synthetic source")
    p.add_argument("--repeats", type=int, default=3, help="training steps timed (median)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = PRESETS[args.preset]()
    spec, offsets = cfg.model.spec, clip_offsets(cfg.num_offsets, cfg.offset_step)

    syn_rate, items = rate(InstanceStream(spec, offsets, families=cfg.families, real_media=args.real_media, seed=5), args.instances)
    with tempfile.TemporaryDirectory() as d:
        write_synthetic_folder(Path(d), args.folder_videos, seed=7, duration=8.0, size=128)
        folder = InstanceStream(spec, offsets, source="videos", path=d, shuffle_buffer=cfg.shuffle_buffer, seed=1)
        folder_rate, _ = rate(folder, args.instances)

    b = cfg.batch_size
    batch = {k: torch.stack([x[k] for x in items[:b]]) for k in items[0]}
    model = SyncClassifier(cfg.model).train()
    scores = PairScores(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    train_step(scores, batch, opt, cfg)  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        train_step(scores, batch, opt, cfg)
        times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    need = b / step
    print(f"preset {args.preset}: batch {b} instances x {cfg.num_offsets} offsets, 1 torch thread")
    print(f"training step: {step * 1000:.0f} ms (median of {args.repeats}) -> needs {need:.2f} instances/s")
    print(f"synthetic families{' + real media' if args.real_media else ''}: {syn_rate:.2f} instances/s "
          f"({syn_rate / need:.2f}x the step's need per loader process)")
    print(f"video folder ({args.folder_videos} mp4, 128 px, streamed): {folder_rate:.2f} instances/s "
          f"({folder_rate / need:.2f}x per loader process)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
