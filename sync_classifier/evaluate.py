"""31-offset synchronization accuracy (supplement Sec. 1.3).

    python -m sync_classifier.evaluate --checkpoint sync_classifier/checkpoints/small --synthetic 200
    python -m sync_classifier.evaluate --checkpoint CKPT --videos DIR
    python -m sync_classifier.evaluate --checkpoint CKPT --shards 'out/shards/*.tar'

For each sounding video (>= 3.2 s; shorter or unreadable files are skipped and reported), 31 audio
and 31 video clips are cut at offsets -0.6..+0.6 s (0.04 s steps) around the middle of the video;
phi is computed for all 31 x 31 pairs. a2v: for each audio clip the argmax over the 31 video clips
is correct if within +-5 steps (+-0.2 s) of the true one; v2a: the same per video clip. Chance is
about 33 %. Synthetic evaluation videos use seeds >= 1e9, never drawn in training.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Iterable, Iterator

import numpy as np
import torch

from curate.media import DecodedVideo

from .config import ClipSpec
from .data import EVAL_SEED_BASE, clip_offsets, iter_folder, iter_shards, make_instance, required_duration
from .frames import video_to_tensor
from .loss import offset_accuracy
from .model import SyncClassifier
from .synthetic import make_sounding_video

EVAL_OFFSETS = 31
EVAL_STEP = 0.04
EVAL_TOLERANCE = 5


def synthetic_videos(n: int, spec: ClipSpec, seed: int = EVAL_SEED_BASE, fps: float = 24.0, duration: float = 4.0) -> Iterator[tuple[str, DecodedVideo]]:
    for i in range(n):
        v, _ = make_sounding_video(seed + i, duration=duration, size=spec.image_size, fps=fps, audio_rate=spec.audio_rate)
        yield f"synthetic-{seed + i}", v


@torch.no_grad()
def phi_matrix(model: SyncClassifier, video: DecodedVideo, center: float, offsets: np.ndarray, chunk: int = 64) -> torch.Tensor:
    """[K, K] phi(audio at offset i, video at offset j) around center."""
    inst = make_instance(video, center, offsets, model.spec)
    dev = next(model.parameters()).device
    a = torch.cat([model.encode_audio(m.to(dev)) for m in inst["mel"].split(chunk)])
    v = torch.cat([model.encode_video(video_to_tensor(f, model.spec.image_size).to(dev)) for f in inst["frames"].split(chunk)])
    return model.head.pairwise(a[None], v[None])[0].float().cpu()


@torch.no_grad()
def evaluate_model(model: SyncClassifier, videos: Iterable[tuple[str, DecodedVideo]], num_offsets: int = EVAL_OFFSETS,
                   step: float = EVAL_STEP, tolerance: int = EVAL_TOLERANCE, report: dict | None = None) -> dict:
    """Mean a2v / v2a accuracy over the videos (each evaluated around its middle)."""
    was_training = model.training
    model.eval()
    offsets = clip_offsets(num_offsets, step)
    need = required_duration(num_offsets, step, model.spec)
    accs = []
    for name, v in videos:
        if v.audio is None or v.duration < need - 1e-6:
            if report is not None:
                report.setdefault("skipped", []).append((name, f"too short ({v.duration:.2f} s < {need:.2f} s)"))
            continue
        accs.append(offset_accuracy(phi_matrix(model, v, v.duration / 2, offsets), tolerance))
    model.train(was_training)
    if not accs:
        return {"acc_a2v": float("nan"), "acc_v2a": float("nan"), "n": 0}
    return {"acc_a2v": float(np.mean([a["acc_a2v"] for a in accs])), "acc_v2a": float(np.mean([a["acc_v2a"] for a in accs])), "n": len(accs)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m sync_classifier.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="folder with config.json + model.safetensors")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--videos", help="folder of sounding videos (searched recursively)")
    src.add_argument("--shards", help="curated WebDataset shards (glob / brace pattern)")
    src.add_argument("--synthetic", type=int, metavar="N", help="N fresh held-out synthetic videos")
    p.add_argument("--seed", type=int, default=EVAL_SEED_BASE, help="first synthetic seed (default 1e9: held out)")
    p.add_argument("--synthetic-fps", type=float, default=24.0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", help="also write the result as JSON to this path")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = SyncClassifier.from_pretrained(args.checkpoint)
    spec = model.spec
    need = required_duration(EVAL_OFFSETS, EVAL_STEP, spec)
    report: dict = {}
    if args.synthetic is not None:
        videos = synthetic_videos(args.synthetic, spec, seed=args.seed, fps=args.synthetic_fps)
        source = f"synthetic x{args.synthetic} (seeds {args.seed}..)"
    elif args.videos:
        videos, source = iter_folder(args.videos, spec, need, report), args.videos
    else:
        videos, source = iter_shards(args.shards, spec, need, report), args.shards
    try:
        from tqdm import tqdm

        videos = tqdm(videos, desc="evaluate", file=sys.stderr, dynamic_ncols=True)
    except ImportError:
        pass
    res = evaluate_model(model, videos, report=report)
    res.update(source=source, checkpoint=str(args.checkpoint), skipped=report.get("skipped", []),
               protocol=f"{EVAL_OFFSETS} offsets, {EVAL_STEP} s steps, correct within +-{EVAL_TOLERANCE} steps")
    for name, why in res["skipped"]:
        print(f"skipped {name}: {why}")
    print(f"{res['n']} videos ({len(res['skipped'])} skipped) from {source}")
    print(f"a2v accuracy: {100 * res['acc_a2v']:.1f} %")
    print(f"v2a accuracy: {100 * res['acc_v2a']:.1f} %")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
