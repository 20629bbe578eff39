"""A run's shard members by segment id, read in place, and thumbnails of segments.

`ShardIndex` reads only the tar headers of `<out>/shards/*.tar` (no data) and remembers where each member's
bytes lie, so the review page can stream a segment's `.mp4` (with HTTP byte ranges, for seeking) and the
split can copy members into new shards without extracting or re-encoding anything.
`Thumbnails` decodes a segment's mp4 once and caches its first, middle and last frames as JPEG files
under `<out>/review_cache/thumbs/`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("curate.review")


@dataclass(frozen=True)
class Member:
    tar: Path
    offset: int
    size: int


class ShardIndex:
    """{segment_id: {ext: Member}} over every `*.tar` of a shard folder."""

    def __init__(self, shard_dir: str | Path):
        self.shard_dir = Path(shard_dir)
        self.members: dict[str, dict[str, Member]] = {}
        self.unreadable: list[str] = []
        """tars that could not be read (skipped with a warning; their segments count as missing)"""
        for tar_path in sorted(self.shard_dir.glob("*.tar")):
            try:
                with tarfile.open(tar_path, "r") as tar:
                    found = [m for m in tar.getmembers() if m.isfile()]
                size = tar_path.stat().st_size
                if any(m.offset_data + m.size > size for m in found):
                    raise tarfile.ReadError("truncated")
            except (tarfile.TarError, OSError) as e:
                log.warning("skipping unreadable shard %s: %s", tar_path, e)
                self.unreadable.append(str(tar_path))
                continue
            for m in found:
                key, _, ext = os.path.basename(m.name).partition(".")
                self.members.setdefault(key, {})[ext] = Member(tar_path, m.offset_data, m.size)

    def __contains__(self, segment_id: str) -> bool:
        return segment_id in self.members

    def member(self, segment_id: str, ext: str) -> Member | None:
        return self.members.get(segment_id, {}).get(ext)

    def read(self, segment_id: str, ext: str, start: int = 0, length: int | None = None) -> bytes:
        """Bytes `[start, start + length)` of a member (all of it by default)."""
        m = self.members[segment_id][ext]
        start = max(0, min(start, m.size))
        n = m.size - start if length is None else max(0, min(length, m.size - start))
        with open(m.tar, "rb") as f:
            f.seek(m.offset + start)
            return f.read(n)

    def sample(self, segment_id: str) -> list[tuple[str, bytes]]:
        """Every member of a segment as (name, bytes), in name order (as the run's shards hold them)."""
        return [(f"{segment_id}.{ext}", self.read(segment_id, ext)) for ext in sorted(self.members[segment_id])]


class Thumbnails:
    """First / middle / last frame of a segment's mp4 as cached JPEG bytes."""

    def __init__(self, index: ShardIndex, cache_dir: str | Path, count: int = 3, max_side: int = 240):
        self.index = index
        self.cache_dir = Path(cache_dir)
        self.count = count
        self.max_side = max_side
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def path(self, segment_id: str, i: int) -> Path:
        return self.cache_dir / f"{segment_id}-{i}.jpg"

    def get(self, segment_id: str, i: int) -> bytes:
        """JPEG bytes of thumbnail `i` (0 = first frame, count-1 = last); KeyError for an unknown segment,
        IndexError for an out-of-range `i`."""
        if not 0 <= i < self.count:
            raise IndexError(i)
        if self.index.member(segment_id, "mp4") is None:
            raise KeyError(segment_id)
        p = self.path(segment_id, i)
        if not p.is_file():
            with self._guard:
                lock = self._locks.setdefault(segment_id, threading.Lock())
            with lock:  # the page asks for all thumbnails at once: decode once
                if not p.is_file():
                    self._make(segment_id)
        return p.read_bytes()

    def _make(self, segment_id: str) -> None:
        import av
        from PIL import Image

        meta = {}
        if self.index.member(segment_id, "json") is not None:
            meta = json.loads(self.index.read(segment_id, "json"))
        n = int(meta.get("num_frames") or 0)
        frames: dict[int, np.ndarray] = {}
        with av.open(io.BytesIO(self.index.read(segment_id, "mp4"))) as c:
            stream = c.streams.video[0]
            if not n:
                n = stream.frames or 0
            want = sorted({int(round(k * (max(n, 1) - 1) / max(self.count - 1, 1))) for k in range(self.count)})
            last = None
            for j, frame in enumerate(c.decode(stream)):
                last = frame
                if j in want:
                    frames[j] = self._small(frame)
                if len(frames) == len(want):
                    break
        picks = [frames.get(j) for j in want]
        if last is not None:  # fewer frames than the metadata said: the last decoded one stands in
            picks = [p if p is not None else self._small(last) for p in picks]
        while len(picks) < self.count:
            picks.append(picks[-1] if picks else np.zeros((2, 2, 3), np.uint8))
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(picks):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=85)
            p = self.path(segment_id, i)
            tmp = p.with_name(f".{p.name}.tmp{os.getpid()}-{threading.get_ident()}")
            tmp.write_bytes(buf.getvalue())
            os.replace(tmp, p)

    def _small(self, frame) -> np.ndarray:
        w, h = frame.width, frame.height
        s = min(1.0, self.max_side / max(w, h))
        return frame.to_ndarray(format="rgb24", width=max(2, int(w * s)), height=max(2, int(h * s)))
