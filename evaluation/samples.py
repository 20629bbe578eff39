"""What is evaluated: generated sounding videos with their sidecars, and the reference (test) shards.

Generated samples are `<name>.mp4` files (video + audio track, as `train.sample_jointdit` writes), each with an
optional sidecar `<name>.json` naming what it was made from:

    {"reference": "<segment key in the reference shards>",   # pairs the sample with its ground truth
     "clip_start": 3.5,           # seconds into that segment where the source clip starts (default 0)
     "image": "cond/abc.png",     # the conditioning image (default: the reference clip's first frame)
     "label": "dog barking",      # class text for IT (default: the reference segment's label)
     "random_weights": false}     # the generator's weights were random (flagged in every output)

Without a sidecar (or without `reference`) the paired metrics (IA/IT without a label, RelSync, P_Align,
AlignSync, KL, IB-IV/IB-IA without an image) are skipped for that sample with the reason recorded; the
unpaired ones still run. Reference shards are the curation's WebDataset tars (`media.shards`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SIDECAR_FIELDS = ("reference", "clip_start", "image", "label", "random_weights")


@dataclass
class GeneratedItem:
    key: str
    path: Path
    sidecar: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    """why paired metrics cannot run for this sample (no sidecar, unreadable sidecar, no reference ...)"""

    @property
    def reference(self) -> str | None:
        return self.sidecar.get("reference")

    @property
    def clip_start(self) -> float:
        try:
            return float(self.sidecar.get("clip_start", 0.0) or 0.0)
        except (TypeError, ValueError):
            return 0.0


def discover_generated(folder: str | Path) -> list[GeneratedItem]:
    """Every `*.mp4` under `folder` (sorted), with its sidecar when there is one."""
    items = []
    for p in sorted(Path(folder).rglob("*.mp4")):
        item = GeneratedItem(p.relative_to(folder).with_suffix("").as_posix(), p)
        side = p.with_suffix(".json")
        if not side.is_file():
            item.problems.append("no sidecar json")
        else:
            try:
                data = json.loads(side.read_text())
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                item.sidecar = data
                if not data.get("reference"):
                    item.problems.append("sidecar names no reference")
            except (ValueError, OSError) as e:
                item.problems.append(f"unreadable sidecar: {e}")
        items.append(item)
    return items


def load_image(path: str | Path) -> np.ndarray:
    """An image file -> uint8 [H, W, 3] RGB (PyAV decodes png/jpg)."""
    import av

    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


def iter_reference_segments(shards: list[str], decode_cfg=None, failed: list[dict] | None = None):
    """(key, DecodedVideo, meta) of every reference segment, decoded one at a time.

    A segment that cannot be decoded (corrupt or truncated media, a missing member, unreadable metadata) or a
    shard that cannot be read to its end is skipped with a warning and appended to `failed` as
    {"shard", "key", "error"} (key None for a shard-level failure); the other segments go on."""
    import logging
    import tarfile

    from media.shards import decode_sample, group_samples, stream_tar_members

    log = logging.getLogger(__name__)

    def fail(url, key, err):
        rec = {"shard": str(url), "key": key, "error": f"{type(err).__name__}: {err}"}
        log.warning("reference %s in %s skipped: %s", key or "shard", url, rec["error"])
        if failed is not None:
            failed.append(rec)

    for url in shards:
        try:
            for raw in group_samples(stream_tar_members(url)):
                try:
                    s = decode_sample(raw, decode_cfg)
                except Exception as e:  # one bad segment never stops the run; it is recorded
                    fail(url, raw.get("__key__"), e)
                    continue
                if raw.get("mp4") is not None:  # the encoded clip, for cuts that re-read the file (RelSync under asva)
                    s.video.source["mp4_bytes"] = raw["mp4"]
                yield s.key, s.video, s.meta
        except (tarfile.TarError, OSError, EOFError) as e:
            fail(url, None, e)


__all__ = ["SIDECAR_FIELDS", "GeneratedItem", "discover_generated", "load_image", "iter_reference_segments"]
