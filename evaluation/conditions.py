"""Conditioning inputs for the samplers, cut from test shards under an evaluation protocol.

For every reference segment and every clip the protocol takes from it (`avsync15`: head, centre, tail;
`jointdit`: one random 2 s clip, seeded as `pipelines.evaluate` seeds it), write
- `<key>-<i>.png`: the clip's first frame at the protocol's size (the image the samplers animate),
- `<key>-<i>.wav`: the clip's audio (16-bit PCM, the segment's rate; AVSyncD's sound condition),
- `<key>-<i>.json`: the condition record: `reference` (segment key), `clip_start` (seconds), `image`,
  `audio`, `label`, `protocol`, `samples` (generated samples the protocol expects per image).
Samplers given `--condition <key>-<i>.json` (or `condition=`) copy `reference`, `clip_start`, `image` and
`label` into their output sidecar, so `pipelines.evaluate` pairs each sample with its ground truth.
Segments that cannot be decoded are skipped and listed with their error in `failed_segments.jsonl`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FAILED_NAME = "failed_segments.jsonl"
"""Written into the output folder (one JSON object per line, not `.json`, so that globbing the condition records
does not pick it up): the reference segments (or shards) that could not be decoded, with the error."""


@dataclass
class ConditionConfig:
    reference: str = ""
    """Test shards (glob / brace pattern, quoted) the conditions are cut from."""
    out: str = "out/conditions"
    """Folder for the <key>-<i>.png / .wav / .json files."""
    protocol: str = "jointdit"
    """avsync15 (3 clips per video, 256 x 256) / jointdit (1 random 2 s clip, 256 x 256) / none (segment start, source size)."""
    dataset: str = "avsync15"
    """Test set name, for the samples-per-image count of the protocol (avsync15 / greatesthits / landscape)."""
    seed: int = 0
    """Seed of the random clip choice (the `jointdit` protocol); the same seed as pipelines.evaluate picks the same clips."""


def write_conditions(cfg: ConditionConfig, progress: bool = True, failed: list[dict] | None = None) -> list[dict]:
    """Write the condition files; returns their records (one per protocol clip, in shard order). The segments
    that could not be decoded go to `failed_segments.jsonl` and, when a list is given, into `failed`."""
    import cv2
    import soundfile as sf
    from tqdm import tqdm

    from common.cli import UsageError, output_dir, resolve_files
    from media.decode import DecodeConfig
    from evaluation.protocols import PROTOCOLS, clip_starts, cut
    from evaluation.samples import iter_reference_segments

    if cfg.protocol not in PROTOCOLS:
        raise UsageError(f"protocol {cfg.protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    from evaluation.protocols import protocol_for

    try:
        protocol = protocol_for(cfg.protocol, cfg.dataset)
    except ValueError as e:
        raise UsageError(str(e)) from None
    shards = resolve_files(cfg.reference, "--reference shards")
    out = output_dir(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    samples = protocol.samples_per_reference.get(cfg.dataset, 1)
    rng = np.random.default_rng(cfg.seed)
    decode = DecodeConfig(short_side=0, max_fps=1000.0, audio_rate=16000)
    records = []
    failed = [] if failed is None else failed
    bar = tqdm(desc="conditions", unit="segment", disable=not progress)
    for key, video, meta in iter_reference_segments(shards, decode, failed):
        for i, start in enumerate(clip_starts(video.duration, protocol, rng)):
            frames, audio, _ = cut(video, start, protocol.fps, protocol.num_frames, protocol.size)
            name = f"{key}-{i}"
            if not cv2.imwrite(str(out / f"{name}.png"), cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR)):
                raise OSError(f"cannot write {out / (name + '.png')}")
            sf.write(out / f"{name}.wav", np.clip(audio, -1, 1), video.audio_rate, subtype="PCM_16")
            rec = {"reference": key, "clip_start": round(float(start), 4), "image": f"{name}.png", "audio": f"{name}.wav",
                   "label": meta.get("label"), "protocol": protocol.name, "samples": samples,
                   "height": int(frames.shape[1]), "width": int(frames.shape[2])}
            (out / f"{name}.json").write_text(json.dumps(rec, indent=1))
            records.append(rec)
        bar.update(1)
    bar.close()
    (out / FAILED_NAME).write_text("".join(json.dumps(f) + "\n" for f in failed))
    return records


def read_condition(path: str | Path) -> dict:
    """A condition record with `image` / `audio` made absolute (they are stored relative to the record)."""
    from common.cli import UsageError

    p = Path(path)
    try:
        rec = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"condition {str(path)!r}: cannot read it ({type(e).__name__}: {e})") from None
    if not isinstance(rec, dict) or "reference" not in rec or "image" not in rec:
        raise UsageError(f"condition {str(path)!r}: not a condition record (needs 'reference' and 'image'; "
                         "write them with python -m pipelines.conditions)")
    for k in ("image", "audio"):
        if rec.get(k) and not Path(rec[k]).is_absolute():
            rec[k] = str((p.parent / rec[k]).resolve())
    return rec


def sidecar_fields(rec: dict) -> dict:
    """What a sampler copies from a condition record into its output sidecar (see docs/evaluation.md)."""
    return {k: rec[k] for k in ("reference", "clip_start", "image", "label") if rec.get(k) is not None}


__all__ = ["ConditionConfig", "write_conditions", "read_condition", "sidecar_fields"]
