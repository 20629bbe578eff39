"""Time one sync-classifier training step against a bare forward+backward of the two encoders.

    python bench/sync_train_step.py [--preset small] [--batch-size 4] [--repeats 3] [--threads 2]

Both sides see the same batch (B instances x 21 offsets). The training step adds the 21 x 21
pairwise head (split first layer), the symmetric InfoNCE, flips and the AdamW update; the baseline is
encode_audio + encode_video + sum().backward(). Prints the median times and their ratio, then the
video encoder's forward + backward on CPU with channels-last tensors (the default) against the
contiguous layout, and that ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sync_classifier.config import PRESETS
from sync_classifier.data import InstanceStream, clip_offsets
from sync_classifier.frames import clip_tensor
from sync_classifier.model import SyncClassifier, VideoEncoder
from train.sync_classifier import train_step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", choices=sorted(PRESETS))
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = PRESETS[args.preset]()
    b = args.batch_size or cfg.batch_size
    torch.manual_seed(0)
    model = SyncClassifier(cfg.model).train()
    it = iter(InstanceStream(cfg.model.spec, clip_offsets(cfg.num_offsets, cfg.offset_step), families=cfg.families))
    insts = [next(it) for _ in range(b)]
    batch = {k: torch.stack([x[k] for x in insts]) for k in insts[0]}
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    k = cfg.num_offsets
    mel = batch["mel"].reshape(b * k, *batch["mel"].shape[2:])
    frames = batch["frames"].reshape(b * k, *batch["frames"].shape[2:])

    def bare():
        video = clip_tensor(frames, cfg.model.spec)
        opt.zero_grad(set_to_none=True)
        (model.encode_audio(mel).sum() + model.encode_video(video).sum()).backward()

    def step():
        train_step(model, batch, opt, cfg)

    times = {"bare": [], "step": []}
    bare(), step()  # warm-up
    for _ in range(args.repeats):  # interleaved, so load changes hit both sides alike
        for name, fn in (("bare", bare), ("step", step)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    tb, ts = statistics.median(times["bare"]), statistics.median(times["step"])
    print(f"preset {args.preset}, batch {b} x {k} offsets ({b * k} audio + {b * k} video clips), threads {torch.get_num_threads()}")
    print(f"bare encoders forward+backward: {tb * 1000:.0f} ms (median of {args.repeats})")
    print(f"training step (21x21 phi, InfoNCE, AdamW): {ts * 1000:.0f} ms (median of {args.repeats})")
    print(f"ratio step / bare: {ts / tb:.3f}")

    video = clip_tensor(frames, cfg.model.spec)
    layouts = {"channels-last": True, "contiguous": False}
    vt = {name: [] for name in layouts}
    for _ in range(args.repeats + 1):  # the first round is a warm-up
        for name, flag in layouts.items():
            VideoEncoder.channels_last_on_cpu = flag
            opt.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            model.encode_video(video).sum().backward()
            vt[name].append(time.perf_counter() - t0)
    VideoEncoder.channels_last_on_cpu = True
    tl, tc = (statistics.median(vt[n][1:]) for n in layouts)
    print(f"video encoder forward+backward on {video.device.type}: channels-last {tl * 1000:.0f} ms, "
          f"contiguous {tc * 1000:.0f} ms, ratio {tl / tc:.3f}")


if __name__ == "__main__":
    main()
