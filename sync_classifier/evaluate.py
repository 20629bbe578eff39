"""Synchronization accuracy of a sync classifier (supplement Sec. 1.3, the authors' protocol).

    python -m sync_classifier.evaluate --checkpoint sync_classifier/checkpoints/small --synthetic 50
    python -m sync_classifier.evaluate --checkpoint CKPT --synthetic 50 --families motion,contact
    python -m sync_classifier.evaluate --checkpoint CKPT --videos DIR protocol=all
    python -m sync_classifier.evaluate --checkpoint CKPT --shards 'out/shards/*.tar' --json result.json

For each sounding video, K = 31 audio and 31 video clips (2 s each) are cut at offsets -0.6..+0.6 s
(0.04 s steps) around the middle of the video, and phi is computed for all pairs. A prediction is
correct if it is within +-5 steps (+-0.2 s) of the truth.

- protocol "asva" (default; lzhangbj/ASVA `avsync_eval.py`): only the centre clip is scored. a2v: the
  centre audio clip against the K video clips; v2a: the K audio clips against the centre video clip.
  Chance: 11 / 31 = 35.5 %.
- protocol "all": every audio clip against the K video clips (a2v) and every video clip against the
  K audio clips (v2a), averaged. Chance: 32.4 % (fewer correct positions near the ends).

Preprocessing (`preprocess`): "auto" (default) uses the checkpoint's: the authors' released layout cuts
the clips from each file as their loader does ("asva": nearest decoded frame, full-size bicubic, their
audio path; the clips centred on the middle of min(video, audio duration)); this project's checkpoints
use "native". "asva" needs --videos (files); with shards or synthetic videos "auto" falls back to
"native" and says so in the result.

Both are computed and printed, each with its chance level. A video needs (K - 1) * 0.04 + 2 = 3.2 s.
Shorter ones (curated segments are often exactly 3.0 s) use the largest odd K that fits, down to
`min_offsets` (3.0 s -> K = 25, +-0.48 s, chance 44 % for "asva"); the K used per video and the
resulting chance level are reported. Shorter or unreadable videos are skipped, each with its reason,
and counted. Synthetic evaluation videos use seeds >= 1e9, never drawn in training.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch

from media.decode import DecodedVideo

from common.cli import UsageError, add_config_arguments, output_file, run_main, settings_help
from common.config import load

from .config import ClipSpec
from .data import EVAL_SEED_BASE, clip_offsets, iter_folder, iter_shards, make_instance
from .families import ALL_FAMILIES, load_real_media, make_family_video
from .frames import clip_tensor
from .model import SyncClassifier

log = logging.getLogger("sync_classifier.evaluate")

EVAL_OFFSETS = 31
EVAL_STEP = 0.04
EVAL_TOLERANCE = 5
PROTOCOLS = ("asva", "all")


@dataclass
class EvalConfig:
    checkpoint: str = ""
    """Checkpoint folder (or a file in it): config.json + model.safetensors, or the authors' `modules`."""
    protocol: str = "asva"
    """"asva": only the centre clip scored against the K offsets (the authors' code); "all": every clip."""
    num_offsets: int = EVAL_OFFSETS
    """K offsets (odd) at offset_step spacing, centred on the middle of the video."""
    offset_step: float = EVAL_STEP
    tolerance: int = EVAL_TOLERANCE
    """A prediction within this many offset steps of the truth is correct (5 x 0.04 s = +-0.2 s)."""
    min_offsets: int = 13
    """Videos too short for num_offsets use the largest odd K that fits, down to this; shorter ones are skipped."""
    videos: str = ""
    """Folder of sounding videos (searched recursively)."""
    shards: str = ""
    """Curated WebDataset shards (glob / brace pattern; several separated by spaces)."""
    synthetic: int = 0
    """N fresh held-out synthetic videos (per family when several families are given)."""
    families: tuple[str, ...] = ("motion", "contact", "deform", "appearance", "camera", "multi")
    """Look families of the synthetic videos (sync_classifier/families.py; "flash" = the first generator)."""
    real_media: str = ""
    """Folder of real media mixed into synthetic videos (see TrainConfig.real_media)."""
    seed: int = EVAL_SEED_BASE
    """First synthetic seed (>= 1e9: never drawn in training)."""
    synthetic_fps: float = 24.0
    synthetic_duration: float = 4.0
    preprocess: str = "auto"
    """"auto" (the checkpoint's: "asva" for the authors' layout, else "native"), "asva" or "native"."""
    threads: int = 0
    """torch threads (0 = torch's default)."""
    device: str = "cpu"
    json: str = ""
    """Also write the result as JSON to this path."""


def chance_level(k: int, tolerance: int, protocol: str) -> float:
    """Accuracy of a uniformly random prediction over k offsets."""
    if protocol == "asva":
        return min(k, 2 * tolerance + 1) / k
    idx = np.arange(k)
    return float(np.mean([np.sum(np.abs(idx - i) <= tolerance) for i in idx]) / k)


def offsets_that_fit(duration: float, spec: ClipSpec, num: int, step: float, minimum: int) -> int:
    """The largest odd K <= num whose clips fit in `duration` seconds; 0 if below `minimum`."""
    k = num if num % 2 else num - 1
    while k >= max(1, minimum):
        if (k - 1) * step + spec.duration <= duration + 1e-6:
            return k
        k -= 2
    return 0


def synthetic_videos(n: int, spec: ClipSpec, seed: int = EVAL_SEED_BASE, fps: float = 24.0, duration: float = 4.0,
                     family: str = "flash", real_media: str = "") -> Iterator[tuple[str, DecodedVideo]]:
    media = load_real_media(real_media, spec.image_size, spec.audio_rate) if real_media else None
    for i in range(n):
        v, _ = make_family_video(seed + i, family, duration=duration, size=spec.image_size, fps=fps,
                                 audio_rate=spec.audio_rate, media=media)
        yield f"{family}-{seed + i}", v


@torch.no_grad()
def phi_matrix(model: SyncClassifier, video: DecodedVideo, center: float, offsets: np.ndarray, chunk: int = 64) -> torch.Tensor:
    """[K, K] phi(audio at offset i, video at offset j) around center."""
    inst = make_instance(video, center, offsets, model.spec)
    dev = next(model.parameters()).device
    a = torch.cat([model.encode_audio(m.to(dev)) for m in inst["mel"].split(chunk)])
    v = torch.cat([model.encode_video(clip_tensor(f, model.spec).to(dev)) for f in inst["frames"].split(chunk)])
    return model.head.pairwise(a[None], v[None])[0].float().cpu()


def asva_duration(path) -> float:
    """min(video, audio duration) of a file, as the authors' loader measures it (stream metadata)."""
    from .asva_preprocess import AsvaReader

    r = AsvaReader(path)
    return min(r.video_duration, r.audio_duration) if r.has_audio else 0.0


@torch.no_grad()
def phi_matrix_asva(model: SyncClassifier, path, center: float, offsets: np.ndarray, chunk: int = 64) -> torch.Tensor:
    """[K, K] phi with the clips cut from the file as the authors' loader does (preprocess=asva)."""
    from .asva_preprocess import asva_clips

    video, mel = asva_clips(path, center + np.asarray(offsets) - model.spec.duration / 2, model.spec)
    dev = next(model.parameters()).device
    dt = next(model.parameters()).dtype
    a = torch.cat([model.encode_audio(m.to(dev, dt)) for m in mel.split(chunk)])
    v = torch.cat([model.encode_video(x.to(dev, dt)) for x in video.split(chunk)])
    return model.head.pairwise(a[None], v[None])[0].float().cpu()


def scores(phi: torch.Tensor, tolerance: int) -> dict:
    """{protocol: (a2v, v2a)} for one [K, K] phi matrix."""
    k = phi.shape[0]
    c = k // 2
    idx = torch.arange(k)
    return {
        "asva": (float(abs(int(phi[c].argmax()) - c) <= tolerance), float(abs(int(phi[:, c].argmax()) - c) <= tolerance)),
        "all": (((phi.argmax(1) - idx).abs() <= tolerance).float().mean().item(),
                ((phi.argmax(0) - idx).abs() <= tolerance).float().mean().item()),
    }


@torch.no_grad()
def evaluate_model(model: SyncClassifier, videos: Iterable[tuple[str, DecodedVideo]], num_offsets: int = EVAL_OFFSETS,
                   step: float = EVAL_STEP, tolerance: int = EVAL_TOLERANCE, report: dict | None = None,
                   protocol: str = "asva", min_offsets: int = 13, preprocess: str = "native") -> dict:
    """Mean accuracies of both protocols over the videos (each around its middle), their chance levels
    (averaged over the K used per video), and `acc_a2v` / `acc_v2a` of `protocol`. preprocess="asva":
    each video's name is its file, cut as the authors' loader does."""
    was_training = model.training
    model.eval()
    per = {p: [] for p in PROTOCOLS}
    chance = {p: [] for p in PROTOCOLS}
    used = Counter()
    for name, v in videos:
        if v.audio is None:
            if report is not None:
                report.setdefault("skipped", []).append((name, "no audio"))
            continue
        duration = asva_duration(name) if preprocess == "asva" else v.duration
        k = offsets_that_fit(duration, model.spec, num_offsets, step, min_offsets)
        if k == 0:
            need = (min_offsets - 1) * step + model.spec.duration
            if report is not None:
                report.setdefault("skipped", []).append((name, f"too short ({v.duration:.2f} s < {need:.2f} s for {min_offsets} offsets)"))
            continue
        used[k] += 1
        if preprocess == "asva":
            phi = phi_matrix_asva(model, name, duration / 2, clip_offsets(k, step))
        else:
            phi = phi_matrix(model, v, v.duration / 2, clip_offsets(k, step))
        s = scores(phi, tolerance)
        for p in PROTOCOLS:
            per[p].append(s[p])
            chance[p].append(chance_level(k, tolerance, p))
    model.train(was_training)
    out = {"n": sum(used.values()), "offsets_used": {str(k): n for k, n in sorted(used.items())}, "protocol": protocol,
           "preprocess": preprocess}
    for p in PROTOCOLS:
        arr = np.asarray(per[p]) if per[p] else np.full((1, 2), np.nan)
        out[p] = {"acc_a2v": float(arr[:, 0].mean()), "acc_v2a": float(arr[:, 1].mean()),
                  "chance": float(np.mean(chance[p])) if chance[p] else float("nan")}
    out["acc_a2v"], out["acc_v2a"] = out[protocol]["acc_a2v"], out[protocol]["acc_v2a"]
    return out


def _iter_with_bar(videos, desc):
    try:
        from tqdm import tqdm

        return tqdm(videos, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=False)
    except ImportError:  # pragma: no cover
        return videos


def run(cfg: EvalConfig) -> dict:
    """Evaluate cfg.checkpoint on the configured source; returns the result mapping (see module doc)."""
    from common.cli import UsageError, resolve_files

    if cfg.protocol not in PROTOCOLS:
        raise UsageError(f"protocol={cfg.protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    sources = [bool(cfg.videos), bool(cfg.shards), cfg.synthetic > 0]
    if sum(sources) != 1:
        raise UsageError("give exactly one source: --videos DIR, --shards PATTERN or --synthetic N")
    if cfg.num_offsets < 1 or cfg.num_offsets % 2 == 0:
        raise UsageError(f"num_offsets={cfg.num_offsets}: must be odd (a centre clip)")
    bad = [f for f in cfg.families if f not in ALL_FAMILIES]
    if bad:
        raise UsageError(f"unknown family {bad[0]!r}; known: {', '.join(ALL_FAMILIES)}")
    shard_files = resolve_files(cfg.shards) if cfg.shards else None
    if cfg.videos:
        from pathlib import Path

        if not Path(cfg.videos).is_dir():
            raise UsageError(f"--videos {cfg.videos!r} is not a folder")
    try:
        model = SyncClassifier.from_pretrained(cfg.checkpoint, device=cfg.device)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    spec = model.spec
    from .asva_preprocess import resolve_preprocess

    try:
        preprocess = resolve_preprocess(cfg.preprocess, spec)
    except ValueError as e:
        raise UsageError(str(e)) from None
    note = ""
    if preprocess == "asva" and not cfg.videos:
        if cfg.preprocess == "asva":
            raise UsageError("preprocess=asva cuts clips from video files: give --videos DIR (or preprocess=native)")
        preprocess, note = "native", "the checkpoint's asva preprocessing needs video files; shards / synthetic use native"
    kw = dict(num_offsets=cfg.num_offsets, step=cfg.offset_step, tolerance=cfg.tolerance, protocol=cfg.protocol,
              min_offsets=cfg.min_offsets, preprocess=preprocess)
    report: dict = {}
    res: dict = {"checkpoint": str(cfg.checkpoint), "training_data": model.training_data, "preprocess": preprocess}
    if note:
        res["preprocess_note"] = note
    if cfg.synthetic:
        res["families"] = {}
        for fam in cfg.families:
            vids = synthetic_videos(cfg.synthetic, spec, seed=cfg.seed, fps=cfg.synthetic_fps, duration=cfg.synthetic_duration,
                                    family=fam, real_media=cfg.real_media)
            res["families"][fam] = evaluate_model(model, _iter_with_bar(vids, f"evaluate {fam}"), report=report, **kw)
        fams = list(res["families"].values())
        res["n"] = sum(f["n"] for f in fams)
        for p in PROTOCOLS:
            res[p] = {key: float(np.mean([f[p][key] for f in fams])) for key in ("acc_a2v", "acc_v2a", "chance")}
        res["acc_a2v"], res["acc_v2a"] = res[cfg.protocol]["acc_a2v"], res[cfg.protocol]["acc_v2a"]
        res["source"] = f"synthetic x{cfg.synthetic} per family (seeds {cfg.seed}..)"
    else:
        need = (cfg.min_offsets - 1) * cfg.offset_step + spec.duration
        vids = iter_folder(cfg.videos, spec, need, report) if cfg.videos else iter_shards(shard_files, spec, need, report)
        res.update(evaluate_model(model, _iter_with_bar(vids, "evaluate"), report=report, **kw))
        res["source"] = cfg.videos or cfg.shards
    res["skipped"] = report.get("skipped", [])
    res["protocol"] = cfg.protocol
    res["preprocess"] = preprocess
    res["settings"] = f"{cfg.num_offsets} offsets, {cfg.offset_step} s steps, correct within +-{cfg.tolerance} steps"
    return res


def print_result(res: dict, cfg: EvalConfig) -> None:
    for name, why in res["skipped"]:
        print(f"skipped {name}: {why}")
    print(f"{res['n']} videos ({len(res['skipped'])} skipped) from {res['source']}; checkpoint {res['checkpoint']} "
          f"(training data: {res['training_data']}; preprocess {res.get('preprocess', 'native')})")
    if res.get("preprocess_note"):
        print(f"note: {res['preprocess_note']}")
    if "offsets_used" in res and res["offsets_used"]:
        print("offsets used per video: " + ", ".join(f"K={k}: {n}" for k, n in res["offsets_used"].items()))
    if "families" in res:
        print(f"{'family':<12} {'asva a2v':>9} {'asva v2a':>9} {'all a2v':>8} {'all v2a':>8}")
        for fam, r in res["families"].items():
            print(f"{fam:<12} {100 * r['asva']['acc_a2v']:8.1f}% {100 * r['asva']['acc_v2a']:8.1f}% "
                  f"{100 * r['all']['acc_a2v']:7.1f}% {100 * r['all']['acc_v2a']:7.1f}%")
    for p in (cfg.protocol,) + tuple(q for q in PROTOCOLS if q != cfg.protocol):
        r = res[p]
        tag = " (default)" if p == "asva" else ""
        print(f"protocol {p}{tag}: a2v accuracy {100 * r['acc_a2v']:.1f} %, v2a accuracy {100 * r['acc_v2a']:.1f} % "
              f"(chance {100 * r['chance']:.1f} %)")
    print(f"a2v accuracy: {100 * res['acc_a2v']:.1f} %")
    print(f"v2a accuracy: {100 * res['acc_v2a']:.1f} %")


# ------------------------------------------------------------------------------------------- command line

EVAL_FLAGS = {"checkpoint": "checkpoint", "videos": "videos", "shards": "shards", "synthetic": "synthetic",
              "protocol": "protocol", "families": "families", "seed": "seed", "synthetic_fps": "synthetic_fps",
              "threads": "threads", "json": "json", "real_media": "real_media", "device": "device"}


def evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sync_classifier.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="checkpoint folder or a file inside it (this project's, or the authors' `modules`)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--videos", help="folder of sounding videos (searched recursively)")
    src.add_argument("--shards", help="curated WebDataset shards (glob / brace pattern, quoted)")
    src.add_argument("--synthetic", type=int, metavar="N", help="N fresh held-out synthetic videos per family")
    p.add_argument("--protocol", choices=("asva", "all"), help="asva (default): centre clip vs the 31 offsets; all: every clip")
    p.add_argument("--families", help="comma-separated synthetic look families (default: the six of the training mix)")
    p.add_argument("--real-media", help="folder of real media mixed into the synthetic videos")
    p.add_argument("--seed", type=int, help="first synthetic seed (default 1e9: held out from training)")
    p.add_argument("--synthetic-fps", type=float, help="frame rate of the synthetic videos (default 24)")
    p.add_argument("--threads", type=int, help="torch threads (0 = torch's default)")
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--json", help="also write the result as JSON to this file")
    add_config_arguments(p, example="protocol=all min_offsets=21")
    return p


def evaluate_main(argv=None) -> int:
    args = evaluate_parser().parse_args(argv)
    if args.help_config:
        print(settings_help(EvalConfig))
        return 0
    return run_main(lambda: _evaluate(args))


def _evaluate(args) -> None:
    explicit = {dotted: getattr(args, flag) for flag, dotted in EVAL_FLAGS.items()}
    cfg = load(EvalConfig, path=args.config, overrides=args.overrides, explicit=explicit)
    if not cfg.checkpoint:
        raise UsageError("--checkpoint is required")
    if cfg.json:
        output_file(cfg.json, "--json")
    res = run(cfg)
    print_result(res, cfg)
    if cfg.json:
        Path(cfg.json).write_text(json.dumps(res, indent=2) + "\n")
        print(f"saved result to {cfg.json}")
    else:
        print("result printed above (no --json given)", file=sys.stderr)


def main(argv=None) -> int:
    """`python -m sync_classifier.evaluate`; returns the exit code (0, or 2 with one `error:` line)."""
    return evaluate_main(argv)


if __name__ == "__main__":
    sys.exit(main())
